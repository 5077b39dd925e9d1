"""Device rules without the kernel: v1 text, ``--device`` parsing, and the eBPF program run by a tiny
interpreter against a reference "last matching rule wins" evaluation."""

from __future__ import annotations

import itertools
import os
import stat
import struct

import pytest

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.runtime.devices import DEFAULT_RULES, DeviceRule, assemble, parse_device, rules_for

DEFAULT_V1 = [
    "a *:* rwm", "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
]


def test_default_rules_v1_text():
    assert [r.v1_text() for r in DEFAULT_RULES] == DEFAULT_V1
    assert [r.allow for r in DEFAULT_RULES] == [False] + [True] * 11
    assert not any(r.major == 10 and r.minor == 200 for r in DEFAULT_RULES)  # no tun


def test_rules_for_appends():
    extra = [DeviceRule("c", 10, 237, "rw", True)]
    assert rules_for(extra) == [*DEFAULT_RULES, *extra]


def test_parse_device_host_only():
    host, container, rule, mode = parse_device("/dev/null")
    st = os.stat("/dev/null")
    assert (host, container) == ("/dev/null", "/dev/null")
    assert rule == DeviceRule("c", os.major(st.st_rdev), os.minor(st.st_rdev), "rwm", True)
    assert rule.v1_text() == "c 1:3 rwm"
    assert stat.S_ISCHR(mode) and mode == st.st_mode


@pytest.mark.parametrize(("spec", "container", "access"), [
    ("/dev/null:/dev/mynull", "/dev/mynull", "rwm"),
    ("/dev/null:r", "/dev/null", "r"),
    ("/dev/null:/dev/x:wr", "/dev/x", "rw"),  # canonical order
    ("/dev/null:/dev/x:m", "/dev/x", "m"),
])
def test_parse_device_container_path_and_perms(spec, container, access):
    host, got_container, rule, _ = parse_device(spec)
    assert (host, got_container, rule.access) == ("/dev/null", container, access)


@pytest.mark.parametrize("spec", [
    "/dev/null:/dev/x:rwx", "/dev/null:/dev/x:", "/dev/null:/dev/x:rr", "/dev/null:relative",
    "/dev/null:/a:rw:extra", "", ":/dev/x",
])
def test_parse_device_bad_spec(spec):
    with pytest.raises(InvalidArgumentError):
        parse_device(spec)


def test_parse_device_not_a_device(tmp_path):
    f = tmp_path / "plain"
    f.write_text("")
    for path in (str(f), str(tmp_path), str(tmp_path / "missing")):
        with pytest.raises(InvalidArgumentError, match=path) as info:
            parse_device(path)
        assert "\n" not in str(info.value)


def test_bad_rule_rejected():
    with pytest.raises(InvalidArgumentError):
        DeviceRule("x", 1, 3, "rwm", True)
    with pytest.raises(InvalidArgumentError):
        DeviceRule("c", 1, 3, "", True)


def test_instruction_count():
    # 6 loads; deny-all (2, and nothing after it is reachable); c/b *:* m (type, access, mov, exit);
    # 8 exact nodes (type, major, minor, mov, exit); 136:* (type, major, mov, exit)
    assert len(assemble(DEFAULT_RULES)) == 8 * (6 + 2 + 2 * 4 + 8 * 5 + 4)
    assert len(assemble([])) == 8 * (6 + 2)  # default deny only
    assert len(assemble(rules_for([DeviceRule("c", 10, 237, "rw", True)]))) == 8 * (60 + 6)


# --- a minimal eBPF interpreter for the few opcodes the assembler emits ------------------------------

def run_program(prog: bytes, dev_type: str, access: str, major: int, minor: int) -> int:
    acc = sum({"m": 1, "r": 2, "w": 4}[c] for c in access)
    ctx = struct.pack("<III", (acc << 16) | {"b": 1, "c": 2}[dev_type], major, minor)
    insns = [struct.unpack_from("<BBhi", prog, i) for i in range(0, len(prog), 8)]
    regs = [0] * 11
    pc = 0
    while True:
        code, regs_byte, off, imm = insns[pc]
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if code == 0x61:  # ldxw dst, [src + off]; r1 is the context
            assert src == 1
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] &= imm
        elif code == 0x74:
            regs[dst] >>= imm
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            pc += off if regs[dst] != imm else 0
        elif code == 0x45:
            pc += off if regs[dst] & imm else 0
        elif code == 0x05:
            pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        assert 0 <= pc < len(insns)


def reference(rules, dev_type: str, access: str, major: int, minor: int) -> int:
    for r in reversed(rules):
        # an allow rule must cover every requested bit; a deny rule bites on any of its bits
        covered = set(access) <= set(r.access) if r.allow else bool(set(access) & set(r.access))
        if r.type in ("a", dev_type) and covered and r.major in (-1, major) and r.minor in (-1, minor):
            return int(r.allow)
    return 0


POLICIES = {
    "default": list(DEFAULT_RULES),
    "loop-control rw": rules_for([DeviceRule("c", 10, 237, "rw", True)]),
    "deny null write": rules_for([DeviceRule("c", 1, 3, "w", False)]),
    "deny then allow": rules_for([DeviceRule("c", 1, -1, "rw", False), DeviceRule("c", 1, 5, "r", True)]),
    "privileged": [DeviceRule("a", -1, -1, "rwm", True)],
    "allow all but block": [DeviceRule("a", -1, -1, "rwm", True), DeviceRule("b", -1, -1, "rw", False)],
    "empty": [],
}


@pytest.mark.parametrize("name", POLICIES)
def test_program_matches_reference(name):
    rules = POLICIES[name]
    prog = assemble(rules)
    accesses = ["".join(c) for n in (1, 2, 3) for c in itertools.combinations("rwm", n)]
    for dev_type, access, (major, minor) in itertools.product(
            "cb", accesses, [(1, 3), (1, 5), (1, 4), (5, 2), (136, 7), (10, 237), (7, 0), (10, 200)]):
        want = reference(rules, dev_type, access, major, minor)
        assert run_program(prog, dev_type, access, major, minor) == want, (dev_type, access, major, minor)


def test_deny_rule_bites_on_any_denied_bit():
    # like v1, where "deny c 1:3 w" leaves the exception "c 1:3 rm": an O_RDWR open is refused too
    prog = assemble(rules_for([DeviceRule("c", 1, 3, "w", False)]))
    assert run_program(prog, "c", "r", 1, 3) == 1
    assert run_program(prog, "c", "rw", 1, 3) == 0
    assert run_program(prog, "c", "w", 1, 3) == 0
    assert run_program(prog, "c", "rw", 1, 5) == 1
