"""Device access policy of a container: Docker's default list, ``--device``, cgroup v1 and v2.

A policy is an ordered list of :class:`DeviceRule`; like runc, the LAST rule that matches an
access decides it, and nothing matching means deny. On cgroup v1 the rules are written to the
``devices`` controller's ``devices.deny``/``devices.allow``. cgroup v2 has no devices controller:
the kernel instead runs an eBPF program of type ``BPF_PROG_TYPE_CGROUP_DEVICE`` attached to the
group, which :func:`assemble` builds from the same rules and :func:`attach_v2` loads and attaches.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.runtime import _libc

__all__ = [
    "DEFAULT_RULES", "DeviceRule", "apply_v1", "assemble", "attach_v2", "detach_v2", "parse_device",
    "rules_for",
]

_ACCESS = "rwm"


def _valid_access(access: str) -> bool:
    return 0 < len(access) <= 3 and set(access) <= set(_ACCESS) and len(set(access)) == len(access)


@dataclass(frozen=True)
class DeviceRule:
    """One line of the policy: ``type major:minor access``, allowing or denying.

    ``type`` is ``'a'`` (any), ``'c'`` (char) or ``'b'`` (block); ``major``/``minor`` ``-1`` mean
    ``*``; ``access`` is a non-empty subset of ``'rwm'`` (read, write, mknod).
    """

    type: str
    major: int
    minor: int
    access: str
    allow: bool

    def __post_init__(self) -> None:
        if self.type not in ("a", "c", "b"):
            raise InvalidArgumentError(f"device rule type {self.type!r}: want 'a', 'c' or 'b'")
        if not _valid_access(self.access):
            raise InvalidArgumentError(
                f"device rule access {self.access!r}: want a non-empty subset of 'rwm'")
        if self.major < -1 or self.minor < -1:
            raise InvalidArgumentError(
                f"device rule {self.major}:{self.minor}: numbers must be >= 0 or -1 (*)")

    def v1_text(self) -> str:
        """The rule as cgroup v1 ``devices.allow``/``devices.deny`` text, e.g. ``"c 1:3 rwm"``."""
        def num(n: int) -> str:
            return "*" if n < 0 else str(n)

        return f"{self.type} {num(self.major)}:{num(self.minor)} {self.access}"


def _allow(type_: str, major: int, minor: int, access: str = "rwm") -> DeviceRule:
    return DeviceRule(type_, major, minor, access, True)


_DENY_ALL = DeviceRule("a", -1, -1, "rwm", False)

# Docker's default for a non-privileged container (runc's list plus moby's 5:1 console), without
# tun (10:200): stricter than Docker, which still allows it.
DEFAULT_RULES: tuple[DeviceRule, ...] = (
    _DENY_ALL,
    _allow("c", -1, -1, "m"),  # mknod of any node; opening it is still checked
    _allow("b", -1, -1, "m"),
    _allow("c", 1, 3),    # /dev/null
    _allow("c", 1, 5),    # /dev/zero
    _allow("c", 1, 7),    # /dev/full
    _allow("c", 1, 8),    # /dev/random
    _allow("c", 1, 9),    # /dev/urandom
    _allow("c", 5, 0),    # /dev/tty
    _allow("c", 5, 1),    # /dev/console
    _allow("c", 5, 2),    # /dev/ptmx
    _allow("c", 136, -1),  # /dev/pts/*
)


def rules_for(extra: list[DeviceRule]) -> list[DeviceRule]:
    """The default rules followed by ``extra`` (which, coming last, win over the defaults)."""
    return [*DEFAULT_RULES, *extra]


def parse_device(spec: str) -> tuple[str, str, DeviceRule, int]:
    """Parse Docker's ``--device HOST[:CONTAINER][:PERMS]``.

    Returns
    -------
    (host path, container path, rule allowing exactly that node with PERMS, st_mode of the node)
    """
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise InvalidArgumentError(f"invalid device specification {spec!r}: want HOST[:CONTAINER][:PERMS]")
    host, container, perms = parts[0], parts[0], "rwm"
    if len(parts) == 3:
        container, perms = parts[1], parts[2]
    elif len(parts) == 2:
        # like Docker, a second field that reads as permissions is permissions, else a path
        if _valid_access(parts[1]):
            perms = parts[1]
        else:
            container = parts[1]
    if not _valid_access(perms):
        raise InvalidArgumentError(f"device {spec!r}: invalid permissions {perms!r} (want a subset of 'rwm')")
    if not container.startswith("/"):
        raise InvalidArgumentError(f"device {spec!r}: container path {container!r} is not absolute")
    try:
        st = os.stat(host)
    except OSError as e:
        raise InvalidArgumentError(f"device {host}: {e.strerror}") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise InvalidArgumentError(f"device {host}: not a character or block device")
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    access = "".join(c for c in _ACCESS if c in perms)  # canonical order
    rule = _allow(kind, os.major(st.st_rdev), os.minor(st.st_rdev), access)
    return host, container, rule, st.st_mode


# --- cgroup v1 ------------------------------------------------------------------------------------

def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise OSError(e.errno, f"write {text!r} to {path}: {e.strerror}") from None


def apply_v1(group_dir: str, rules: list[DeviceRule] | tuple[DeviceRule, ...]) -> None:
    """Program a v1 ``devices`` group: deny all first, then each rule in order."""
    # 'a' to devices.deny clears the exception list and makes deny the default (whitelist mode)
    _write(os.path.join(group_dir, "devices.deny"), "a")
    for i, rule in enumerate(rules):
        if i == 0 and rule == _DENY_ALL:
            continue  # just written
        name = "devices.allow" if rule.allow else "devices.deny"
        _write(os.path.join(group_dir, name), rule.v1_text())


# --- cgroup v2: eBPF device program ---------------------------------------------------------------

BPF_PROG_LOAD, BPF_PROG_ATTACH, BPF_PROG_DETACH = 5, 8, 9
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_DEV_TYPE = {"b": 1, "c": 2}           # BPF_DEVCG_DEV_BLOCK / _CHAR
_ACC_BIT = {"m": 1, "r": 2, "w": 4}    # BPF_DEVCG_ACC_MKNOD / _READ / _WRITE
_ATTR_SIZE = 128                       # a prefix of union bpf_attr; the kernel wants the rest zero

# opcodes (linux/bpf_common.h + bpf.h): class | op | source
_LDXW = 0x61       # BPF_LDX | BPF_MEM | BPF_W
_AND32_K = 0x54    # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74    # BPF_ALU | BPF_RSH | BPF_K
_MOV64_K = 0xB7    # BPF_ALU64 | BPF_MOV | BPF_K
_JNE_K = 0x55      # BPF_JMP | BPF_JNE | BPF_K
_JSET_K = 0x45     # BPF_JMP | BPF_JSET | BPF_K: jump if dst & imm
_JA = 0x05         # BPF_JMP | BPF_JA: jump always
_EXIT = 0x95       # BPF_JMP | BPF_EXIT
R0, R1, R2, R3, R4, R5 = range(6)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # struct bpf_insn {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm}; little-endian bitfields
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def _rule_block(rule: DeviceRule) -> list[bytes]:
    """Instructions for one rule: checks that jump past the block on mismatch, then return."""
    checks: list[tuple[int, int, int, int | None]] = []  # (opcode, reg, imm, offset; None: to the end)
    if rule.type != "a":
        checks.append((_JNE_K, R2, _DEV_TYPE[rule.type], None))
    bits = sum(_ACC_BIT[c] for c in rule.access)
    if bits != 7 and rule.allow:
        checks.append((_JSET_K, R3, 7 & ~bits, None))  # asks for more than the rule allows
    elif bits != 7:
        # a deny rule bites when any requested bit is one it denies (as v1 removes just those bits),
        # so "deny c 1:3 w" also refuses an O_RDWR open: skip the block only if none is requested
        checks += [(_JSET_K, R3, bits, 1), (_JA, 0, 0, None)]
    if rule.major >= 0:
        checks.append((_JNE_K, R4, rule.major, None))
    if rule.minor >= 0:
        checks.append((_JNE_K, R5, rule.minor, None))
    n = len(checks) + 2
    out = [_insn(op, reg, off=n - i - 1 if off is None else off, imm=imm)
           for i, (op, reg, imm, off) in enumerate(checks)]
    return [*out, _insn(_MOV64_K, R0, imm=int(rule.allow)), _insn(_EXIT)]


def assemble(rules: list[DeviceRule] | tuple[DeviceRule, ...]) -> bytes:
    """The eBPF program (raw ``struct bpf_insn`` array) enforcing ``rules``; returns 1 allow, 0 deny."""
    prog = [
        # r1 = struct bpf_cgroup_dev_ctx *: {u32 access_type; u32 major; u32 minor}
        _insn(_LDXW, R2, R1, 0), _insn(_AND32_K, R2, imm=0xFFFF),  # r2 = device type
        _insn(_LDXW, R3, R1, 0), _insn(_RSH32_K, R3, imm=16),      # r3 = access bits
        _insn(_LDXW, R4, R1, 4),                                   # r4 = major
        _insn(_LDXW, R5, R1, 8),                                   # r5 = minor
    ]
    for rule in reversed(rules):  # the last matching rule wins, so test it first
        block = _rule_block(rule)
        prog += block
        if len(block) == 2:
            # it matches everything (e.g. 'a *:* rwm'): what follows could never run, and the
            # verifier rejects unreachable instructions
            return b"".join(prog)
    prog += [_insn(_MOV64_K, R0, imm=0), _insn(_EXIT)]  # nothing matched: deny
    return b"".join(prog)


def _load(rules: list[DeviceRule] | tuple[DeviceRule, ...]) -> int:
    code = assemble(rules)
    _insns, insns_addr = _libc.buffer(code)
    _lic, lic_addr = _libc.buffer(b"Apache")
    log, log_addr = _libc.buffer(64 * 1024)
    attr = struct.pack("=IIQQIIQII16s", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8, insns_addr, lic_addr,
                       1, 64 * 1024, log_addr, 0, 0, b"nbc_devices")
    try:
        # _insns, _lic and log stay referenced (alive) until the syscall has returned
        return _libc.bpf(BPF_PROG_LOAD, attr.ljust(_ATTR_SIZE, b"\0"))
    except OSError as e:
        text = _libc.buffer_bytes(log).split(b"\0", 1)[0].decode(errors="replace").strip()
        raise OSError(e.errno, f"{e.strerror}; verifier log: {text or '(empty)'}") from None


def _attach_attr(cgroup_fd: int, prog_fd: int, flags: int) -> bytes:
    return struct.pack("=IIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags).ljust(_ATTR_SIZE, b"\0")


def attach_v2(cgroup_dir: str, rules: list[DeviceRule] | tuple[DeviceRule, ...]) -> int:
    """Load the device program for ``rules`` and attach it to the v2 group ``cgroup_dir``.

    Returns the program fd; closing it is fine, the attachment keeps the program alive. Other
    programs attached above (``BPF_F_ALLOW_MULTI``) still run, and all must allow an access.
    """
    prog_fd = _load(rules)
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _libc.bpf(BPF_PROG_ATTACH, _attach_attr(dir_fd, prog_fd, BPF_F_ALLOW_MULTI))
        finally:
            os.close(dir_fd)
    except OSError as e:
        os.close(prog_fd)
        raise OSError(e.errno, f"attach device program to {cgroup_dir}: {e.strerror}") from None
    return prog_fd


def detach_v2(cgroup_dir: str, prog_fd: int) -> None:
    """Detach the program ``prog_fd`` (from :func:`attach_v2`, still open) from ``cgroup_dir``."""
    dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _libc.bpf(BPF_PROG_DETACH, _attach_attr(dir_fd, prog_fd, 0))
    except OSError as e:
        raise OSError(e.errno, f"detach device program from {cgroup_dir}: {e.strerror}") from None
    finally:
        os.close(dir_fd)
