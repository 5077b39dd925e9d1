"""The syscalls Python 3.11 lacks, through ctypes. The only file of nbcontainer that uses ctypes.

Every wrapper raises ``OSError(errno, message)`` whose message names the operation and its
arguments (source, target, flags), so a failing mount says which one.
"""

from __future__ import annotations

import ctypes
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)

# Syscall numbers differ by architecture; refuse to guess on one we do not know.
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126, "rt_sigaction": 13, "seccomp": 317, "bpf": 321},
    "aarch64": {"pivot_root": 41, "capset": 91, "rt_sigaction": 134, "seccomp": 277, "bpf": 280},
}
try:
    _NR = _SYSCALLS[platform.machine()]
except KeyError:
    raise ImportError(f"nbcontainer's runtime does not know the syscall numbers of {platform.machine()!r} "
                      f"(it knows {', '.join(_SYSCALLS)})") from None

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

SECCOMP_SET_MODE_FILTER = 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_MS_NAMES = {
    MS_RDONLY: "MS_RDONLY", MS_NOSUID: "MS_NOSUID", MS_NODEV: "MS_NODEV", MS_NOEXEC: "MS_NOEXEC",
    MS_REMOUNT: "MS_REMOUNT", MS_BIND: "MS_BIND", MS_REC: "MS_REC", MS_PRIVATE: "MS_PRIVATE",
    MS_SLAVE: "MS_SLAVE", MS_STRICTATIME: "MS_STRICTATIME",
}

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount_flags(flags: int) -> str:
    names = [n for bit, n in _MS_NAMES.items() if flags & bit]
    return "|".join(names) or "0"


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _fail(f"mount {source or 'none'} on {target} type {fstype or 'none'} "
                    f"flags {mount_flags(flags)} data {data or ''!r}")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        raise _fail(f"umount2 {target} flags {flags}")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail(f"unshare flags {flags:#x}")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        raise _fail(f"setns fd {fd} type {nstype:#x}")


def pivot_root(new_root: str, put_old: str) -> None:
    if _libc.syscall(_NR["pivot_root"], _b(new_root), _b(put_old)) != 0:
        raise _fail(f"pivot_root {new_root} {put_old}")


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        raise _fail(f"sethostname {name!r}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    res = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if res < 0:
        raise _fail(f"prctl option {option} arg {arg2}")
    return res


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the three capability sets of the calling thread (64-bit masks)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.syscall(_NR["capset"], ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise _fail(f"capset effective {effective:#x} permitted {permitted:#x}")


def default_signal(sig: int) -> None:
    """SIG_DFL for ``sig`` through the raw syscall: glibc's sigaction refuses the two real-time
    signals it keeps for itself (32, 33), yet an ignored one is inherited across execve."""
    action = ctypes.create_string_buffer(32)  # struct kernel_sigaction, all zero = SIG_DFL, no flags
    if _libc.syscall(_NR["rt_sigaction"], sig, action, None, 8) != 0:
        raise _fail(f"rt_sigaction {sig} SIG_DFL")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(program: bytes) -> None:
    """Load a compiled classic-BPF seccomp program (8-byte ``sock_filter`` entries) on the caller.

    Without no_new_privs this needs CAP_SYS_ADMIN, which container setup still holds here.
    """
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if _libc.syscall(_NR["seccomp"], SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog)) != 0:
        raise _fail(f"seccomp set filter ({len(program) // 8} instructions)")


# --- bpf(2): raw syscall plus C buffers whose addresses go into union bpf_attr -------------------

def buffer(data: bytes | int) -> tuple[ctypes.Array[ctypes.c_char], int]:
    """A writable C buffer and its address.

    ``data`` is the initial content (one NUL byte is appended, so text such as a licence string is
    terminated) or a size in zero bytes. Keep the first item alive while the address is in use.
    """
    if isinstance(data, int):
        buf = ctypes.create_string_buffer(data)
    else:
        buf = ctypes.create_string_buffer(bytes(data), len(data) + 1)
    return buf, ctypes.addressof(buf)


def buffer_bytes(keep: ctypes.Array[ctypes.c_char]) -> bytes:
    """The current content of a buffer made by :func:`buffer` (e.g. a log the kernel filled in)."""
    return bytes(keep.raw)


def bpf(cmd: int, attr: bytes) -> int:
    """``bpf(cmd, attr, len(attr))`` on a mutable copy of ``attr``; returns the result (often an fd)."""
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    res = _libc.syscall(ctypes.c_long(_NR["bpf"]), ctypes.c_long(cmd), buf, ctypes.c_ulong(len(attr)))
    if res < 0:
        raise _fail(f"bpf cmd {cmd}")
    return int(res)
