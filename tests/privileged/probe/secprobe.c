/* secprobe NAME...: one line per probe, "NAME ok", "NAME refused ERRNO" or "NAME error ERRNO".
 *
 * EPERM, EACCES and ENOSYS count as refused (Docker's seccomp profile answers EPERM, podman's
 * ENOSYS, the device cgroup EPERM); any other errno is an error (e.g. ENXIO: no driver).
 * Each probe runs in a forked child, so a probe that succeeds (unshare) cannot change the next.
 * "open:PATH" opens PATH O_RDWR, "read:PATH" O_RDONLY; "euid" prints "euid N"; "status" prints lines of /proc/self/status.
 * "watch:PATH:SECONDS" polls /proc/<every pid>/root/PATH for SECONDS and prints "watch seen PID" when
 * it can read it (a process of the container that shows the host's root), else "watch none".
 * Built static (gcc -static -O1) so it runs in a busybox image.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <dirent.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <time.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int rc(long r) { return r < 0 ? errno : 0; }

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return errno;
    int err = write(fd, text, strlen(text)) < 0 ? errno : 0;
    close(fd);
    return err;
}

/* mknod PATH (type, major, minor) then open it read-write; the mknod's errno if that fails. */
static int node_open(const char *path, mode_t type, int major, int minor) {
    unlink(path);
    if (mknod(path, type | 0666, makedev(major, minor)) < 0) return errno;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) close(fd);
    unlink(path);
    return err;
}

static int userns_mount(void) {
    char map[64];
    uid_t uid = geteuid();
    gid_t gid = getegid();
    int err;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) return errno;
    snprintf(map, sizeof map, "0 %u 1\n", (unsigned)uid);
    if ((err = write_file("/proc/self/uid_map", map))) return err;
    if ((err = write_file("/proc/self/setgroups", "deny"))) return err;
    snprintf(map, sizeof map, "0 %u 1\n", (unsigned)gid);
    if ((err = write_file("/proc/self/gid_map", map))) return err;
    return rc(mount("tmpfs", "/tmp", "tmpfs", 0, NULL));
}

static int perf_open(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.disabled = 1;
    return rc(syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
}

static void status(void) {
    static const char *keys[] = {"Seccomp:", "NoNewPrivs:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:",
                                 "CapAmb:", "SigIgn:", "SigBlk:", NULL};
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) { printf("status error %s\n", strerrorname_np(errno)); return; }
    while (fgets(line, sizeof line, f))
        for (const char **k = keys; *k; k++)
            if (strncmp(line, *k, strlen(*k)) == 0) fputs(line, stdout);
    fclose(f);
}

static int watch(const char *spec) {
    char path[256], file[512];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon - spec >= (long)sizeof path) return EINVAL;
    memcpy(path, spec, colon - spec);
    path[colon - spec] = 0;
    time_t end = time(NULL) + atoi(colon + 1);
    while (time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            snprintf(file, sizeof file, "/proc/%s/root%s", e->d_name, path);
            int fd = open(file, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) { printf("watch seen %s\n", e->d_name); close(fd); closedir(d); return -1; }
        }
        if (d) closedir(d);
    }
    printf("watch none\n");
    return -1;
}

/* The errno of probe NAME, 0 if allowed; -1 if it printed its own answer, -2 if NAME is unknown. */
static int probe(const char *name) {
    union bpf_attr battr;
    if (!strncmp(name, "open:", 5) || !strncmp(name, "read:", 5)) {
        int fd = open(name + 5, (name[0] == 'o' ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (fd < 0) return errno;
        close(fd);
        return 0;
    }
    if (!strncmp(name, "watch:", 6)) return watch(name + 6);
    if (!strcmp(name, "io_uring")) {
        struct io_uring_params params;
        memset(&params, 0, sizeof params);
        long fd = syscall(SYS_io_uring_setup, 4, &params);
        if (fd >= 0) close((int)fd);
        return rc(fd);
    }
    if (!strcmp(name, "euid")) { printf("euid %u\n", (unsigned)geteuid()); return -1; }
    if (!strcmp(name, "status")) { status(); return -1; }
    if (!strcmp(name, "unshare_user")) return rc(unshare(CLONE_NEWUSER));
    if (!strcmp(name, "userns_mount")) return userns_mount();
    if (!strcmp(name, "keyctl"))
        return rc(syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    if (!strcmp(name, "add_key"))
        return rc(syscall(SYS_add_key, "user", "secprobe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
    if (!strcmp(name, "bpf")) {
        memset(&battr, 0, sizeof battr);
        return rc(syscall(SYS_bpf, BPF_PROG_LOAD, &battr, sizeof battr));
    }
    if (!strcmp(name, "perf_event_open")) return perf_open();
    if (!strcmp(name, "userfaultfd")) return rc(syscall(SYS_userfaultfd, O_CLOEXEC));
    if (!strcmp(name, "mount")) return rc(mount("tmpfs", "/mnt", "tmpfs", 0, NULL));
    if (!strcmp(name, "mknod_char")) {
        unlink("/tmp/secprobe-null");
        int err = rc(mknod("/tmp/secprobe-null", S_IFCHR | 0666, makedev(1, 3)));
        unlink("/tmp/secprobe-null");
        return err;
    }
    if (!strcmp(name, "open_loop")) return node_open("/tmp/loop0x", S_IFBLK, 7, 0);
    if (!strcmp(name, "open_loop_control")) return node_open("/tmp/loop-control", S_IFCHR, 10, 237);
    if (!strcmp(name, "open_kvm")) return node_open("/tmp/kvm", S_IFCHR, 10, 232);
    if (!strcmp(name, "open_tty1")) return node_open("/tmp/tty1", S_IFCHR, 4, 1);
    if (!strcmp(name, "open_null")) return probe("open:/dev/null");
    return -2;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        pid_t pid = fork();
        if (pid < 0) { printf("%s error %s\n", argv[i], strerrorname_np(errno)); return 1; }
        if (pid == 0) {
            int err = probe(argv[i]);
            if (err == -2) printf("%s unknown\n", argv[i]);
            else if (err == 0) printf("%s ok\n", argv[i]);
            else if (err > 0)
                printf("%s %s %s\n", argv[i], err == EPERM || err == EACCES || err == ENOSYS ? "refused" : "error",
                       strerrorname_np(err));
            _exit(err == -2 ? 2 : 0);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) return 1;
    }
    return 0;
}
