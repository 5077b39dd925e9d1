"""The seccomp profile code: Docker's schema parsed strictly, rules chosen by capability and arch,
and the compiled filter refusing what Docker's default refuses (checked in a forked child, which
needs no root: with no_new_privs set, any process may confine itself)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.runtime import _libc, caps, seccomp


def names_allowed(cap_mask: int) -> set[str]:
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    held = {n for bit, n in enumerate(caps.NAMES) if cap_mask & (1 << bit)}
    out: set[str] = set()
    for rule in seccomp.DEFAULT_PROFILE["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args") and seccomp._applies(rule, held, arch):
            out.update(rule["names"])
    return out


def test_default_profile_allows_mount_and_unshare_only_with_cap_sys_admin():
    default = names_allowed(caps.mask())
    admin = names_allowed(caps.mask(cap_add=["SYS_ADMIN"]))
    for name in ("mount", "unshare", "setns", "bpf", "perf_event_open"):
        assert name not in default
        assert name in admin
    for name in ("keyctl", "add_key", "userfaultfd", "kexec_load", "open_by_handle_at",
                 "io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert name not in default and name not in admin
    assert {"read", "execve", "setuid", "capset", "mknod"} <= default


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ('{"defaultAction": "SCMP_ACT_NOPE"}', "defaultAction"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}', "must be a list"),
    (('{"defaultAction": "SCMP_ACT_ALLOW",'
      ' "syscalls": [{"names": "mkdir", "action": "SCMP_ACT_ERRNO"}]}'), "names"),
    (('{"defaultAction": "SCMP_ACT_ALLOW",'
      ' "syscalls": [{"names": ["mkdir"], "action": "X"}]}'), "unknown action"),
    (('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",'
     ' "args": [{"index": 0, "op": "SCMP_CMP_WHAT"}]}]}'), "bad argument"),
])
def test_bad_profiles_are_refused_in_one_line_naming_the_profile(text, message):
    with pytest.raises(InvalidArgumentError) as info:
        seccomp.parse_profile(text, "seccomp profile 'p.json'")
    assert message in str(info.value) and "p.json" in str(info.value)
    assert "\n" not in str(info.value)


def confined(program: bytes, probe) -> int:
    """errno (0 = allowed) of ``probe()`` in a forked child confined by ``program``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            os.close(r)
            _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
            _libc.seccomp_set_filter(program)
            try:
                probe()
                code = 0
            except OSError as err:
                code = err.errno or 254
            os.write(w, str(code).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return int(out or -1)


def test_the_compiled_default_filter_refuses_unshare_with_eperm_and_allows_ordinary_calls():
    program = seccomp.program_for("default", caps.mask())
    assert program and len(program) % 8 == 0
    assert confined(program, lambda: _libc.unshare(_libc.CLONE_NEWUSER)) == errno.EPERM
    assert confined(program, lambda: os.close(os.open("/dev/null", os.O_RDONLY))) == 0
    assert confined(program, lambda: os.getpid()) == 0


def test_a_custom_profile_refuses_only_what_it_names():
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                             "errnoRet": errno.EROFS}]}
    program = seccomp.program_for(json.dumps(profile), caps.mask())
    assert confined(program, lambda: os.mkdir("/nonexistent-dir/x")) == errno.EROFS
    assert confined(program, lambda: _libc.unshare(0)) == 0  # unshare(0) is a no-op the profile allows


def test_unconfined_has_no_program():
    assert seccomp.program_for("unconfined", caps.mask()) is None
