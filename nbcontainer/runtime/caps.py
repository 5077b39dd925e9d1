"""Capability names (Docker spelling) and the default set Docker gives a container."""

from __future__ import annotations

import functools

# Index = capability number (linux/capability.h).
NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

DOCKER_DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)


def _normalise(name: str) -> str:
    n = name.strip().upper()
    return n.removeprefix("CAP_")


def unknown(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names in ``names`` that are neither a capability nor ``ALL``."""
    return [n for n in names if _normalise(n) not in NAMES and _normalise(n) != "ALL"]


def mask(cap_add: list[str] | tuple[str, ...] = (), cap_drop: list[str] | tuple[str, ...] = (),
         last_cap: int = len(NAMES) - 1) -> int:
    """The capability mask of a container: Docker's default set, then ``cap_add``, then ``cap_drop``.

    As in Docker, ``ALL`` in ``cap_add`` means every capability the kernel knows, and ``ALL`` in
    ``cap_drop`` empties the set before ``cap_add`` applies.
    """
    add = {_normalise(n) for n in cap_add}
    drop = {_normalise(n) for n in cap_drop}
    full = (1 << (last_cap + 1)) - 1
    bits = 0 if "ALL" in drop else sum(1 << NAMES.index(n) for n in DOCKER_DEFAULT)
    if "ALL" in add:
        bits = full
    bits |= sum(1 << NAMES.index(n) for n in add if n != "ALL")
    if "ALL" not in drop:
        bits &= ~sum(1 << NAMES.index(n) for n in drop if n not in add)
    return bits & full


@functools.lru_cache(maxsize=1)
def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def container_mask(cap_add: list[str] | tuple[str, ...] = (),
                   cap_drop: list[str] | tuple[str, ...] = ()) -> int:
    """:func:`mask` for this kernel: what a container's processes hold (effective, permitted, bounding)."""
    return mask(cap_add, cap_drop, last_cap())
