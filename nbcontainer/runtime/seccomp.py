"""Seccomp: Docker's default profile and the filter built from a profile with libseccomp.

A profile is a dict in Docker's schema (``defaultAction``, ``defaultErrnoRet``, ``archMap`` or
``architectures``, ``syscalls[]`` with ``names``, ``action``, ``errnoRet``, ``args`` and
``includes``/``excludes`` by ``caps``, ``arches`` and ``minKernel``), so a profile written for
``docker run --security-opt seccomp=FILE`` works here unchanged. :data:`DEFAULT_PROFILE` is the
allow list of moby's ``profiles/seccomp/default.json`` as of Docker 25 (io_uring refused, as Docker,
containerd and podman now do): everything not listed fails with EPERM, and the calls that need a
capability (mount, unshare, bpf, ptrace, …) are allowed only when the container holds it.

The filter is built with libseccomp (through ``pyseccomp``) in the process that will be
confined, after the capabilities are known; ``SCMP_FLTATR_CTL_NNP`` is off so loading it does not
set no_new_privs (the container's setuid programs keep working unless asked otherwise).
"""

from __future__ import annotations

import functools
import json
import os
import platform
from typing import Any

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.runtime import caps

# moby's default allow list, unconditional part (alphabetical, as there).
_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32 clock_adjtime
clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd
eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd getdents getdents64
getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername
getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32
getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64
ioprio_get ioprio_set io_setup io_submit ipc kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link
linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall
mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock
munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause
pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64
pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr shmat
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall
socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range
syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime
timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink
unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()  # noqa: SIM905 - as text it reads like moby's list

# Every namespace flag of clone(2): without CAP_SYS_ADMIN, clone may not make a namespace.
_CLONE_NS_MASK = 0x7E020000


def _allow(names: str, **cond: Any) -> dict:
    return {"names": names.split(), "action": "SCMP_ACT_ALLOW", **cond}


def _cap(name: str) -> dict:
    return {"caps": [name]}


DEFAULT_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": _ALLOWED, "action": "SCMP_ACT_ALLOW"},
        _allow("process_vm_readv process_vm_writev ptrace", includes={"minKernel": "4.8"}),
        _allow("socket", args=[{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]),  # no AF_VSOCK
        *(_allow("personality", args=[{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}])
          for v in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)),
        _allow("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
               includes={"arches": ["arm", "arm64"]}),
        _allow("arch_prctl", includes={"arches": ["amd64", "x32"]}),
        _allow("modify_ldt", includes={"arches": ["amd64", "x32", "x86"]}),
        _allow("open_by_handle_at", includes=_cap("CAP_DAC_READ_SEARCH")),
        _allow("bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
               "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname "
               "sethostname setns syslog umount umount2 unshare", includes=_cap("CAP_SYS_ADMIN")),
        _allow("clone",
               args=[{"index": 0, "value": _CLONE_NS_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
               excludes={"caps": ["CAP_SYS_ADMIN"]}),
        # glibc falls back to clone(2) when clone3 says ENOSYS; clone's flags can be checked, clone3's not.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": _cap("CAP_SYS_ADMIN")},
        _allow("reboot", includes=_cap("CAP_SYS_BOOT")),
        _allow("chroot", includes=_cap("CAP_SYS_CHROOT")),
        _allow("delete_module init_module finit_module", includes=_cap("CAP_SYS_MODULE")),
        _allow("acct", includes=_cap("CAP_SYS_PACCT")),
        _allow("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
               includes=_cap("CAP_SYS_PTRACE")),
        _allow("iopl ioperm", includes=_cap("CAP_SYS_RAWIO")),
        _allow("settimeofday stime clock_settime clock_settime64", includes=_cap("CAP_SYS_TIME")),
        _allow("vhangup", includes=_cap("CAP_SYS_TTY_CONFIG")),
        _allow("get_mempolicy mbind set_mempolicy set_mempolicy_home_node", includes=_cap("CAP_SYS_NICE")),
        _allow("syslog", includes=_cap("CAP_SYSLOG")),
        _allow("bpf", includes=_cap("CAP_BPF")),
        _allow("perf_event_open", includes=_cap("CAP_PERFMON")),
    ],
}

_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
            "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
            "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000, "SCMP_ACT_LOG": 0x7FFC0000,
            "SCMP_ACT_ALLOW": 0x7FFF0000}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# Docker's arch names (Go's GOARCH) for the machine names uname gives.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "x86", "armv7l": "arm", "riscv64": "riscv64",
           "s390x": "s390x", "ppc64le": "ppc64le"}
_NATIVE_SCMP = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def parse_profile(text: str, source: str = "seccomp profile") -> dict[str, Any]:
    """A profile from JSON text, checked enough that building it cannot fail half-way."""
    try:
        profile = json.loads(text)
    except ValueError as err:
        raise InvalidArgumentError(f"{source}: not valid JSON: {err}") from None
    if not isinstance(profile, dict) or profile.get("defaultAction") not in _ACTIONS:
        raise InvalidArgumentError(f"{source}: 'defaultAction' must be one of {', '.join(sorted(_ACTIONS))}")
    rules = profile.get("syscalls", [])
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise InvalidArgumentError(f"{source}: 'syscalls' must be a list")
    for i, rule in enumerate(rules):
        where = f"{source}: syscalls[{i}]"
        if not isinstance(rule, dict):
            raise InvalidArgumentError(f"{where} is not an object")
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidArgumentError(f"{where}: 'names' must be a list of syscall names")
        if rule.get("action") not in _ACTIONS:
            raise InvalidArgumentError(f"{where}: unknown action {rule.get('action')!r}")
        for arg in rule.get("args") or []:
            if (not isinstance(arg, dict) or arg.get("op") not in _OPS
                    or not isinstance(arg.get("index"), int)):
                raise InvalidArgumentError(f"{where}: bad argument condition {arg!r}")
    return profile


def _kernel_at_least(version: str) -> bool:
    def nums(v: str) -> tuple[int, ...]:
        out = []
        for part in v.split("-")[0].split(".")[:2]:
            digits = "".join(ch for ch in part if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return nums(os.uname().release) >= nums(version)


def _applies(rule: dict, held: set[str], arch: str) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps") and not all(c.removeprefix("CAP_") in held for c in inc["caps"]):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"]):
        return False
    if exc.get("caps") and any(c.removeprefix("CAP_") in held for c in exc["caps"]):
        return False
    return not (exc.get("arches") and arch in exc["arches"])


def _action(name: str, errno_ret: int | None, default_errno: int) -> int:
    code = _ACTIONS[name]
    if name == "SCMP_ACT_ERRNO":
        return code | ((default_errno if errno_ret is None else errno_ret) & 0xFFFF)
    return code


def build(profile: dict[str, Any], cap_mask: int) -> Any:
    """A ``pyseccomp.SyscallFilter`` for ``profile`` and a process holding ``cap_mask``; call
    ``.load()`` on it in the process to confine."""
    import pyseccomp as sc

    machine = platform.machine()
    arch = _GOARCH.get(machine, machine)
    held = {name for bit, name in enumerate(caps.NAMES) if cap_mask & (1 << bit)}
    default_errno = int(profile.get("defaultErrnoRet") or 1)
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"), default_errno)
    flt = sc.SyscallFilter(default)
    flt.set_attr(sc.Attr.CTL_NNP, 0)
    native = _NATIVE_SCMP.get(machine)
    subs: list[str] = []
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            subs = list(entry.get("subArchitectures") or [])
    subs += [a for a in profile.get("architectures") or [] if a != native]
    for name in subs:
        arch_id = getattr(sc.Arch, name.removeprefix("SCMP_ARCH_"), None)
        if arch_id is not None and not flt.exist_arch(arch_id):
            flt.add_arch(arch_id)
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, held, arch):
            continue
        action = _action(rule["action"], rule.get("errnoRet"), default_errno)
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default action
        args = [sc.Arg(a["index"], _OPS[a["op"]], int(a.get("value", 0)), int(a.get("valueTwo", 0)))
                for a in rule.get("args") or []]
        for name in rule.get("names") or [rule.get("name")]:
            if sc.resolve_syscall(sc.Arch.NATIVE, name) == -1 and not _known_anywhere(sc, flt, name):
                continue  # a syscall libseccomp does not know on any arch of this filter: runc skips it
            try:
                flt.add_rule(action, name, *args)
            except OSError as err:
                if err.errno != 17:  # EEXIST: the same rule twice (syslog is listed for two caps)
                    raise OSError(err.errno, f"seccomp rule for {name}: {err.strerror}") from err
    return flt


def _known_anywhere(sc: Any, flt: Any, name: str) -> bool:
    for arch in (sc.Arch.X86, sc.Arch.X32, sc.Arch.ARM):
        try:
            if flt.exist_arch(arch) and sc.resolve_syscall(arch, name) != -1:
                return True
        except OSError:
            continue
    return False


@functools.lru_cache(maxsize=32)
def compile_program(profile_json: str, cap_mask: int) -> bytes:
    """The classic-BPF program of a profile (given as JSON text) for ``cap_mask``, compiled once per
    runner: libseccomp takes ~10 ms to build and compile Docker's profile, loading it ~0.1 ms."""
    flt = build(json.loads(profile_json), cap_mask)
    fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            flt.export_bpf(f)
            f.seek(0)
            return f.read()
    finally:
        os.close(fd)


DEFAULT_PROFILE_JSON = json.dumps(DEFAULT_PROFILE)


def program_for(setting: str, cap_mask: int) -> bytes | None:
    """The program for a container's ``seccomp`` setting: ``"default"``, ``"unconfined"`` (None) or
    a profile's JSON text."""
    if setting == "unconfined":
        return None
    return compile_program(DEFAULT_PROFILE_JSON if setting in ("", "default") else setting, cap_mask)
