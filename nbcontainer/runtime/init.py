"""Child-side setup: what runs in the container's PID 1 (and in an exec'd process) before execve.

:func:`container_init` is one linear function in runc's order; ``step`` names what it is doing, and
any failure goes back on the sync pipe as ``{"step", "errno", "detail"}`` (the shim turns it into
``RuntimeSetupError``). The message table on the sync pipe (child -> shim), one line each::

    {"step": ..., "errno": ..., "detail": ...}   setup failed, the child exits 1
    ready                                       set up; now blocked on exec.fifo until ``start``
    started                                     released by ``start``; execve comes next
    (EOF)                                       execve happened (the pipe is close-on-exec) or died

The shim has already mounted the overlay on ``merged`` in the host mount namespace and unshared the
pid namespace, so this process is PID 1 of a new pid namespace and inherits the overlay.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import signal
import socket
import stat
import struct
import sys
from typing import NoReturn

from nbcontainer.runtime import _libc as libc
from nbcontainer.runtime import caps
from nbcontainer.runtime.bundle import Bundle, Device

NS_FLAGS = libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC
_PROC_FLAGS = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
            ("tty", 5, 0))
# runc also links /dev/core -> /proc/kcore; a masked path behind a link is still a path to kcore.
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# Docker's masked and read-only paths (moby's oci/defaults.go; runc's spec template has most of them).
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOFILE = 1048576


class SetupError(Exception):
    def __init__(self, step: str, err: int, detail: str) -> None:
        super().__init__(step, err, detail)
        self.step, self.errno, self.detail = step, err, detail


def container_init(b: Bundle, sync_w: int, joined_r: int, stdio: tuple[int, int, int], fifo: str,
                   seccomp_program: bytes | None) -> NoReturn:
    """Set up the container from inside PID 1, wait for ``start``, exec. Never returns.

    The shim moves this process into its cgroups meanwhile (a v1 migration waits for an RCU grace
    period, ~10 ms here, so it runs in parallel with the setup) and writes one byte on
    ``joined_r`` when done. A private cgroup namespace (v2, as Docker) must be unshared after the
    move and before the capabilities go; with the host's (v1, as Docker) the move need only be
    done before execve.
    """
    spec = b.spec
    step = "stdio"
    private_cgroupns = b.cgroupns == "private"
    try:
        _stdio(stdio, spec.tty)
        step = "unshare"
        join = b.netns_path
        libc.unshare(NS_FLAGS | (0 if spec.network == "host" or join else libc.CLONE_NEWNET))
        step = "network"
        if join:  # --network container:<id>
            fd = os.open(join, os.O_RDONLY | os.O_CLOEXEC)
            libc.setns(fd, libc.CLONE_NEWNET)
            os.close(fd)
        elif spec.network != "host":
            _loopback_up()
        step = "private mounts"
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        rootfs = spec.merged
        step = "rootfs"
        if not os.path.ismount(rootfs):
            raise OSError(errno.ENOENT, f"overlay is not mounted on {rootfs}")
        step = "volumes"
        for m in spec.mounts:
            _bind(m.source, secure_join(rootfs, m.destination), readonly=m.readonly)
        step = "etc files"
        for name in ("hosts", "resolv.conf", "hostname"):
            _bind(os.path.join(b.path, name), secure_join(rootfs, "/etc/" + name), readonly=False)
        step = "proc"
        libc.mount("proc", _mkdir(rootfs, "/proc"), "proc", _PROC_FLAGS)
        step = "dev"
        _dev(rootfs, spec.devices)
        step = "sys"
        libc.mount("sysfs", _mkdir(rootfs, "/sys"), "sysfs", _PROC_FLAGS | libc.MS_RDONLY)
        step = "exec fifo"
        fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
        step = "pivot_root"
        pivot_root(rootfs)
        step = "masked paths"
        for path in MASKED_PATHS:
            _mask(path)
        step = "readonly paths"
        for path in READONLY_PATHS:
            _readonly(path)
        if spec.readonly_rootfs:
            step = "readonly rootfs"
            libc.mount(None, "/", None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY)
        step = "hostname"
        libc.sethostname(spec.hostname)
        step = "rlimits"
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        step = "user"
        uid, gid, groups, home = resolve_user(spec.user)
        env = container_env(spec.env, spec.hostname, home)
        if private_cgroupns:
            step = "cgroup"
            _await_cgroup(joined_r)
            libc.unshare(libc.CLONE_NEWCGROUP)
        finalize_privileges(caps.container_mask(spec.cap_add, spec.cap_drop), uid, gid, groups,
                            seccomp_program, spec.no_new_privileges)
        step = "cwd"
        os.chdir(spec.cwd or "/")
        step = "ready"
        os.write(sync_w, b"ready\n")
        step = "start"
        # Kept open (close-on-exec): ``start`` reads the byte, then EOF tells it execve happened.
        fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, b"0")
        os.close(fifo_fd)
        if not private_cgroupns:
            step = "cgroup"
            _await_cgroup(joined_r)
        os.write(sync_w, b"started\n")
    except SetupError as err:
        _report(sync_w, err.step, err.errno, err.detail)
    except OSError as err:
        _report(sync_w, step, err.errno or 0, err.strerror or str(err))
    except BaseException as err:  # noqa: BLE001 - the child must never unwind into the runner's code
        _report(sync_w, step, 0, f"{type(err).__name__}: {err}")
    execvpe(spec.args, env)


def exec_init(b: Bundle, stdio: tuple[int, int, int], tty: bool, args: list[str], env: list[str],
              cwd: str, user: str, sync_w: int, seccomp_program: bytes | None) -> NoReturn:
    """In a running container (its namespaces and cgroups already joined by the exec helper, which
    forked us into its pid namespace), become its user with its privileges and exec ``args``."""
    step = "stdio"
    try:
        _stdio(stdio, tty)
        step = "user"
        uid, gid, groups, home = resolve_user(user)
        env = container_env(env, b.spec.hostname, home)
        finalize_privileges(caps.container_mask(b.spec.cap_add, b.spec.cap_drop), uid, gid, groups,
                            seccomp_program, b.spec.no_new_privileges, dumpable=False)
        step = "cwd"
        os.chdir(cwd or "/")
    except SetupError as err:
        _report(sync_w, err.step, err.errno, err.detail)
    except OSError as err:
        _report(sync_w, step, err.errno or 0, err.strerror or str(err))
    except BaseException as err:  # noqa: BLE001
        _report(sync_w, step, 0, f"{type(err).__name__}: {err}")
    execvpe(args, env)


def _await_cgroup(joined_r: int) -> None:
    if os.read(joined_r, 1) != b"1":
        raise OSError(errno.EIO, "the shim could not move the container into its cgroups")
    os.close(joined_r)


def _report(sync_w: int, step: str, err: int, detail: str) -> NoReturn:
    try:
        os.write(sync_w, json.dumps({"step": step, "errno": err, "detail": detail}).encode() + b"\n")
    finally:
        os._exit(1)



def _stdio(stdio: tuple[int, int, int], tty: bool) -> None:
    if tty:
        os.setsid()
        fcntl.ioctl(stdio[0], 0x540E, 0)  # TIOCSCTTY
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target)
    for fd in set(stdio):
        if fd > 2:
            os.close(fd)


def _loopback_up() -> None:
    # SIOCSIFFLAGS on "lo": IFF_UP | IFF_LOOPBACK | IFF_RUNNING, as Docker does for --network none.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40))


def secure_join(root: str, path: str) -> str:
    """``root`` + ``path`` with every symlink resolved inside ``root`` (an image cannot point a
    mount target at a host path)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved = ""
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = f"{resolved}/{part}"
        try:
            st = os.lstat(root + candidate)
        except FileNotFoundError:
            resolved = candidate
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, f"too many symlinks under {root}{path}")
            target = os.readlink(root + candidate)
            if target.startswith("/"):
                resolved = ""
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved = candidate
    return root + (resolved or "/")


def _mkdir(rootfs: str, path: str) -> str:
    target = secure_join(rootfs, path)
    os.makedirs(target, exist_ok=True)
    return target


def _bind(source: str, target: str, *, readonly: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    libc.mount(source, target, None, libc.MS_BIND | libc.MS_REC)
    if readonly:
        libc.mount(None, target, None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY)


def _dev(rootfs: str, devices: list[Device]) -> None:
    """Docker's /dev: a tmpfs (nosuid, strictatime, mode 755), the six standard nodes, the links,
    a private devpts, shm and mqueue, and the ``--device`` nodes (the device cgroup allows
    exactly those)."""
    dev = _mkdir(rootfs, "/dev")
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_STRICTATIME, "mode=755,size=65536k")
    old = os.umask(0)
    try:
        for name, major, minor in _DEVICES:
            os.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        for name, target in _DEV_LINKS:
            os.symlink(target, f"{dev}/{name}")
        for sub in ("pts", "shm", "mqueue"):
            os.mkdir(f"{dev}/{sub}", 0o755)
        for d in devices:
            node = secure_join(rootfs, d.path)
            os.makedirs(os.path.dirname(node), exist_ok=True)
            kind = stat.S_IFBLK if d.type == "b" else stat.S_IFCHR
            if os.path.lexists(node):
                os.unlink(node)
            os.mknod(node, kind | (d.mode & 0o7777), os.makedev(d.major, d.minor))
            os.chown(node, d.uid, d.gid)  # as runc: the host node's owner
    finally:
        os.umask(old)
    libc.mount("devpts", f"{dev}/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620,gid=5")
    libc.mount("shm", f"{dev}/shm", "tmpfs", _PROC_FLAGS, "mode=1777,size=65536k")
    libc.mount("mqueue", f"{dev}/mqueue", "mqueue", _PROC_FLAGS)


def pivot_root(rootfs: str) -> None:
    """runc's trick: pivot_root(".", ".") stacks the old root on top of the new; detach it."""
    os.chdir(rootfs)
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/")


def _mask(path: str) -> None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, PermissionError):
        return
    if stat.S_ISDIR(st.st_mode):
        libc.mount("tmpfs", path, "tmpfs", libc.MS_RDONLY, "size=0")
    else:
        libc.mount("/dev/null", path, None, libc.MS_BIND)


def _readonly(path: str) -> None:
    if not os.path.exists(path):
        return
    libc.mount(path, path, None, libc.MS_BIND | libc.MS_REC)
    libc.mount(None, path, None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | _PROC_FLAGS)


def finalize_privileges(keep: int, uid: int, gid: int, groups: list[int], seccomp_program: bytes | None,
                        no_new_privs: bool, *, dumpable: bool = True) -> None:
    """Become the container's user with its capabilities, in runc's order (finalizeNamespace).

    Without no_new_privs the seccomp filter goes first, while CAP_SYS_ADMIN is still held (the
    kernel demands one of the two); with it, last, so fewer of our own calls must pass it. The
    bounding set shrinks before setuid, KEEPCAPS keeps the permitted set across it, and only then
    are the final sets written: effective = permitted = bounding = ``keep``; inheritable and
    ambient empty, so nothing leaks into programs run by a non-root user.
    """
    step = "seccomp"
    try:
        if seccomp_program is not None and not no_new_privs:
            libc.seccomp_set_filter(seccomp_program)
        step = "capabilities"
        libc.prctl(libc.PR_SET_KEEPCAPS, 1)
        for cap in range(caps.last_cap() + 1):
            if not keep & (1 << cap):
                libc.prctl(libc.PR_CAPBSET_DROP, cap)
        step = "setuid"
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        step = "capabilities"
        libc.capset(keep, keep, 0)
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
        libc.prctl(libc.PR_SET_KEEPCAPS, 0)
        if no_new_privs:
            step = "no_new_privs"
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)
            if seccomp_program is not None:
                step = "seccomp"
                libc.seccomp_set_filter(seccomp_program)
        if dumpable:
            # PID 1 only: setuid to a non-root user cleared "dumpable", which makes /proc/self/fd
            # (needed for exec.fifo) root-only. Set last, once every restriction is in place; an
            # exec'd process stays non-dumpable until execve recomputes it.
            libc.prctl(libc.PR_SET_DUMPABLE, 1)
    except OSError as err:
        raise SetupError(step, err.errno or 0, err.strerror or str(err)) from err


def reset_signals() -> None:
    """Every disposition back to default and an empty mask: Python ignores SIGPIPE and SIGXFSZ, a
    parent may have ignored more, and a container's processes must inherit none of it."""
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            libc.default_signal(sig)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def resolve_user(user: str) -> tuple[int, int, list[int], str]:
    """``uid[:gid]`` or ``name[:group]`` read from the container's /etc/passwd and /etc/group."""
    name, _, group = (user or "0").partition(":")
    passwd = _entries("/etc/passwd")
    home = "/"
    if name.isdigit():
        uid = int(name)
        row = next((r for r in passwd if len(r) > 3 and r[2] == name), None)
    else:
        row = next((r for r in passwd if r and r[0] == name), None)
        if row is None or len(row) < 4:
            raise SetupError("user", 0, f"unable to find user {name}: no matching entries in passwd file")
        uid = int(row[2])
    gid = int(row[3]) if row and len(row) > 3 else 0
    if row and len(row) > 5 and row[5]:
        home = row[5]
    groups_db = _entries("/etc/group")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            grow = next((r for r in groups_db if r and r[0] == group), None)
            if grow is None or len(grow) < 3:
                raise SetupError("user", 0,
                                 f"unable to find group {group}: no matching entries in group file")
            gid = int(grow[2])
    username = row[0] if row else ""
    extra = [int(r[2]) for r in groups_db if len(r) > 3 and username and username in r[3].split(",")]
    return uid, gid, sorted({gid, *extra}), home


def container_env(env: list[str], hostname: str, home: str) -> list[str]:
    """Docker's additions: PATH, HOSTNAME and HOME when the image and the caller did not set them."""
    keys = {e.partition("=")[0] for e in env}
    out = list(env)
    if "PATH" not in keys:
        out.insert(0, "PATH=" + DEFAULT_PATH)
    if "HOSTNAME" not in keys:
        out.append("HOSTNAME=" + hostname)
    if "HOME" not in keys:
        out.append("HOME=" + home)
    return out


def execvpe(args: list[str], env: list[str]) -> NoReturn:
    """execve with a PATH search done inside the container; Docker's messages and codes on failure."""
    envd = dict(e.partition("=")[::2] for e in env)
    reset_signals()
    cmd = args[0] if args else ""
    candidates = [cmd] if "/" in cmd else [
        os.path.join(d or ".", cmd) for d in envd.get("PATH", DEFAULT_PATH).split(":")
    ]
    last = errno.ENOENT
    for path in candidates:
        try:
            os.execve(path, args, envd)
        except OSError as err:
            code = err.errno or errno.EIO
            if code in (errno.EACCES, errno.ENOEXEC):
                last = code
            elif code not in (errno.ENOENT, errno.ENOTDIR):
                last = code
                break
    if "/" not in cmd and last == errno.ENOENT:
        msg = f'exec: "{cmd}": executable file not found in $PATH'
    else:
        msg = f"exec {cmd}: {os.strerror(last).lower()}"
    try:
        sys.stderr.flush()
        os.write(2, msg.encode() + b"\n")
    finally:
        os._exit(127 if last == errno.ENOENT else 126)
