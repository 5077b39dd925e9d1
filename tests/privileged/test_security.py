"""Docker's security defaults, probed in our container and in podman's on the same host.

Every probe runs ``probe/secprobe.c`` (static, built here) in both and compares the answers as
"ok" / "refused" / "error", never the errno: podman's seccomp profile answers ENOSYS where Docker's
answers EPERM. Each test also asserts the absolute expectation (Docker's behaviour).

With only ``nbc_podman``'s containers.conf (not the distribution's, whose list drops MKNOD, NET_RAW
and AUDIT_WRITE), podman 4.3 gives Docker's 14 capabilities, so both sides refuse a device for the
same reason (the device cgroup, not a missing CAP_MKNOD) and print the same capability masks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from nbc_podman import podman_fixture

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                       reason="podman and runc are not installed (apt-get install podman runc)"),
]

IMAGE = "localhost/secprobe:1"
PATH_ENV = "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin"
DOCKER_CAPS = "00000000a80425fb"  # Docker's 14 default capabilities
DEVICE_PROBES = ("open_loop", "open_loop_control", "open_kvm", "open_tty1", "mknod_char", "open_null")
SECCOMP_PROBES = ("unshare_user", "userns_mount", "keyctl", "add_key", "bpf", "perf_event_open",
                  "userfaultfd", "mount", "io_uring")
# podman 4.3's own profile still allows these (Docker's since 25.0 refuses io_uring)
PODMAN_OWN_ALLOWS = ("unshare_user", "userns_mount", "keyctl", "io_uring")

podman = podman_fixture(scope="module")


def _build_busybox_rootfs(dest: Path) -> str:
    """``build_busybox_rootfs`` of this directory's conftest (not importable by name: many conftests)."""
    name = "nbc_privileged_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("conftest.py"))
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name].build_busybox_rootfs(dest)


@pytest.fixture(scope="session")
def secprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install -y gcc)")
    out = tmp_path_factory.mktemp("secprobe") / "secprobe"
    src = Path(__file__).with_name("probe") / "secprobe.c"
    proc = subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(src)], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        pytest.skip("cannot build a static secprobe (static libc: apt-get install -y libc6-dev): "
                    f"{proc.stderr[-300:]}")
    return out


@pytest.fixture(scope="session")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory, secprobe: Path) -> Path:
    """busybox, /secprobe, /suprobe (setuid root), /mnt and a shipped /dev-shipped/loop7 (b 7 7, 0666)."""
    base = tmp_path_factory.mktemp("secrootfs")
    rootfs = base / "rootfs"
    rootfs.mkdir()
    try:
        _build_busybox_rootfs(rootfs)
        (rootfs / "mnt").mkdir()
        for name, mode in (("secprobe", 0o755), ("suprobe", 0o4755)):
            shutil.copyfile(secprobe, rootfs / name)
            os.chown(rootfs / name, 0, 0)
            os.chmod(rootfs / name, mode)
        (rootfs / "dev-shipped").mkdir()
        os.mknod(rootfs / "dev-shipped" / "loop7", stat.S_IFBLK | 0o666, os.makedev(7, 7))
        os.chmod(rootfs / "dev-shipped" / "loop7", 0o666)
        out = base / "rootfs.tar"
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            for p in sorted(rootfs.rglob("*")):
                tar.add(p, arcname=str(p.relative_to(rootfs)), recursive=False)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return out


@pytest.fixture(scope="module")
def pod(podman, rootfs_tar: Path):
    """podman with the probe image imported; ``pod(*args, opts=[...])`` runs it, returns the process."""
    podman("import", "--change", PATH_ENV, str(rootfs_tar), IMAGE)

    def run(*args: str, opts: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return podman.run("run", "--rm", "--network", "none", *opts, IMAGE, *args)

    return run


@pytest.fixture
def ours(engine, rootfs_tar: Path):
    """Our engine with the same tar imported; ``ours(*args, **opts)`` runs it, returns the result."""
    engine.import_(rootfs_tar, IMAGE, changes=[PATH_ENV])

    def run(*args: str, **opts: object):
        return engine.run(IMAGE, list(args), network="none", remove=True, **opts)

    yield run
    with contextlib.suppress(Exception):  # the engine fixture then checks no container is left
        engine.rmi(IMAGE, force=True)


def answers(text: str) -> dict[str, str]:
    """``NAME verdict [ERRNO]`` lines -> {NAME: verdict}; ``Key:\\tvalue`` status lines -> {Key: value}."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":\t") if ":\t" in line else line.partition(" ")
        out[key] = rest.split()[0] if rest.split() else rest
    return out


def probe_both(ours, pod, *names: str, opts: dict | None = None, podman_opts: tuple[str, ...] = (),
               cmd: str = "/secprobe") -> tuple[dict[str, str], dict[str, str], str]:
    """Run ``cmd NAME...`` in both; their answers and a message with both outputs for asserts."""
    mine = ours(cmd, *names, **(opts or {}))
    theirs = pod(cmd, *names, opts=podman_opts)
    stdout = mine.stdout.decode()
    msg = f"\nours ({mine.exit_code}):\n{stdout}{mine.stderr.decode()}\npodman ({theirs.returncode}):\n" \
          f"{theirs.stdout}{theirs.stderr}"
    assert mine.exit_code == 0 and theirs.returncode == 0, msg
    return answers(stdout), answers(theirs.stdout), msg


# -- device nodes --------------------------------------------------------------------------------


def test_device_nodes_made_inside_are_refused_by_the_device_cgroup_but_mknod_and_dev_null_work(ours, pod):
    mine, theirs, msg = probe_both(ours, pod, *DEVICE_PROBES)
    expected = {"open_loop": "refused", "open_loop_control": "refused", "open_kvm": "refused",
                "open_tty1": "refused", "mknod_char": "ok", "open_null": "ok"}
    assert theirs == expected, msg
    assert mine == expected, msg


@pytest.mark.parametrize("user", ["0", "65534"])
def test_a_device_node_shipped_in_the_image_cannot_be_opened(ours, pod, user):
    mine, theirs, msg = probe_both(ours, pod, "open:/dev-shipped/loop7", opts={"user": user},
                                   podman_opts=("--user", user))
    assert theirs == mine == {"open:/dev-shipped/loop7": "refused"}, msg


def host_loop_control(tmp_path: Path) -> str:
    """/dev/loop-control, or a node of it (c 10 237) made under tmp_path if the host has none."""
    if os.path.exists("/dev/loop-control"):
        return "/dev/loop-control"
    node = tmp_path / "loop-control"
    os.mknod(node, stat.S_IFCHR | 0o660, os.makedev(10, 237))
    return str(node)


def test_device_flag_admits_that_device_only(ours, pod, tmp_path):
    flag = f"{host_loop_control(tmp_path)}:/dev/loop-control"
    mine, theirs, msg = probe_both(ours, pod, "open:/dev/loop-control", "open_loop_control", "open_kvm",
                                   opts={"devices": [flag]}, podman_opts=("--device", flag))
    assert theirs == mine, msg
    assert mine["open:/dev/loop-control"] != "refused" and mine["open_loop_control"] != "refused", msg
    assert mine["open_kvm"] == "refused", msg


def test_device_flag_with_read_only_permission_admits_reading_not_writing(ours, pod, tmp_path):
    flag = f"{host_loop_control(tmp_path)}:/dev/lc:r"
    mine, theirs, msg = probe_both(ours, pod, "read:/dev/lc", "open:/dev/lc", opts={"devices": [flag]},
                                   podman_opts=("--device", flag))
    assert theirs == mine, msg
    assert mine["read:/dev/lc"] != "refused" and mine["open:/dev/lc"] == "refused", msg


def test_device_node_keeps_the_host_nodes_mode_and_owner(ours, pod, tmp_path):
    host = tmp_path / "owned-node"
    os.mknod(host, stat.S_IFCHR | 0o640, os.makedev(10, 237))
    os.chown(host, 0, 6)  # group "disk", as /dev/loop-control on Debian
    flag = f"{host}:/dev/lc"
    mine = ours("stat", "-c", "%a %u %g %t:%T", "/dev/lc", devices=[flag])
    theirs = pod("stat", "-c", "%a %u %g %t:%T", "/dev/lc", opts=("--device", flag))
    assert mine.stdout.decode() == theirs.stdout == "640 0 6 a:ed\n", (mine.stderr, theirs.stderr)


def test_dev_is_a_nosuid_tmpfs_without_the_core_link(ours, pod):
    script = "cat /proc/self/mountinfo; ls -a /dev"
    mine, theirs = ours("sh", "-c", script), pod("sh", "-c", script)
    assert mine.exit_code == 0 and theirs.returncode == 0, (mine.stderr, theirs.stderr)
    for lines in (theirs.stdout.splitlines(), mine.stdout.decode().splitlines()):
        dev = [line.split() for line in lines if len(line.split()) > 4 and line.split()[4] == "/dev"]
        assert len(dev) == 1, lines
        assert dev[0][dev[0].index("-") + 1] == "tmpfs" and "nosuid" in dev[0][5].split(","), dev
        assert "core" not in lines and "null" in lines, lines


# -- /proc/self/status ---------------------------------------------------------------------------


def test_status_shows_the_seccomp_filter_dockers_capabilities_and_clean_signals(ours, pod):
    # Ignored here, so inherited by the runner this test starts: the container must not see it.
    # (podman passes on what its caller ignores, e.g. signal 32 under some job shells: not compared.)
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        mine, theirs, msg = probe_both(ours, pod, "status")  # the probe is PID 1: no shell changes signals
    finally:
        signal.signal(signal.SIGHUP, old)
    for side in (theirs, mine):
        assert side["Seccomp"] == "2" and side["NoNewPrivs"] == "0", msg
        assert side["CapInh"] == side["CapAmb"] == "0000000000000000", msg
    assert mine["SigIgn"] == mine["SigBlk"] == "0000000000000000", msg
    assert mine["CapBnd"] == theirs["CapBnd"] and mine["CapEff"] == theirs["CapEff"], msg
    assert mine["CapBnd"] == mine["CapEff"] == mine["CapPrm"] == DOCKER_CAPS, msg


# -- seccomp -------------------------------------------------------------------------------------


def test_the_default_seccomp_profile_refuses_namespaces_keyrings_bpf_perf_userfaultfd_and_mount(
        ours, pod, tmp_path):
    """podman 4.3's own profile allows unshare, keyctl and mount (for nested containers), where
    Docker's refuses them: podman runs our default profile (Docker's, as a file) and both must
    enforce it alike; podman's own profile must agree on the calls it refuses too."""
    from nbcontainer.runtime import seccomp

    profile = tmp_path / "default.json"
    profile.write_text(seccomp.DEFAULT_PROFILE_JSON)
    mine, theirs, msg = probe_both(ours, pod, *SECCOMP_PROBES,
                                   podman_opts=("--security-opt", f"seccomp={profile}"))
    own = answers(pod("/secprobe", *SECCOMP_PROBES).stdout)
    msg += f"\npodman's own profile: {own}"
    expected = dict.fromkeys(SECCOMP_PROBES, "refused")
    assert theirs == expected, msg
    assert mine == expected, msg
    assert {k: v for k, v in own.items() if k not in PODMAN_OWN_ALLOWS} == {
        k: v for k, v in expected.items() if k not in PODMAN_OWN_ALLOWS}, msg


def test_seccomp_unconfined_turns_the_filter_off(ours, pod):
    mine, theirs, msg = probe_both(ours, pod, "status", "unshare_user", "keyctl",
                                   opts={"security_opt": ["seccomp=unconfined"]},
                                   podman_opts=("--security-opt", "seccomp=unconfined"))
    assert theirs["Seccomp"] == mine["Seccomp"] == "0", msg
    assert theirs["unshare_user"] == mine["unshare_user"] == "ok", msg
    assert theirs["keyctl"] == mine["keyctl"] == "ok", msg


def test_a_custom_seccomp_profile_refuses_mkdir_only(ours, pod, tmp_path):
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    for argv, refused in ((["mkdir", "/tmp/x"], True), (["touch", "/tmp/y"], False)):
        mine = ours(*argv, security_opt=[f"seccomp={profile}"])
        theirs = pod(*argv, opts=("--security-opt", f"seccomp={profile}"))
        msg = f"{argv}: ours {mine.exit_code} {mine.stderr!r}, podman {theirs.returncode} {theirs.stderr!r}"
        assert (mine.exit_code != 0) == (theirs.returncode != 0) == refused, msg


# -- users, setuid, capabilities -----------------------------------------------------------------


def test_a_setuid_root_binary_raises_nobody_to_euid_0(ours, pod):
    mine, theirs, msg = probe_both(ours, pod, "euid", opts={"user": "65534"}, podman_opts=("--user", "65534"),
                                   cmd="/suprobe")
    assert theirs["euid"] == mine["euid"] == "0", msg


def test_no_new_privileges_keeps_the_setuid_binary_at_the_callers_euid(ours, pod):
    mine, theirs, msg = probe_both(ours, pod, "euid", "status", cmd="/suprobe",
                                   opts={"user": "65534", "security_opt": ["no-new-privileges"]},
                                   podman_opts=("--user", "65534", "--security-opt", "no-new-privileges"))
    assert theirs["euid"] == mine["euid"] == "65534", msg
    assert theirs["NoNewPrivs"] == mine["NoNewPrivs"] == "1", msg


def test_cap_drop_all_as_nobody_still_runs(ours, pod):
    mine = ours("id", user="65534", cap_drop=["ALL"])
    theirs = pod("id", opts=("--cap-drop", "ALL", "--user", "65534"))
    assert theirs.returncode == 0 and "uid=65534" in theirs.stdout, theirs.stderr
    assert mine.exit_code == 0 and b"uid=65534" in mine.stdout, mine.stderr


# -- exec ----------------------------------------------------------------------------------------


def test_an_exec_never_shows_the_hosts_root_to_the_container_even_with_sys_ptrace(engine, ours, tmp_path):
    """The exec'd process joins every namespace before it becomes visible in the container's pid
    namespace: a watcher polling /proc/*/root for a host-only file sees nothing (runc's order)."""
    secret = tmp_path / "host-only-secret"
    secret.write_text("host secret\n")
    watcher = engine.run(IMAGE, ["/secprobe", f"watch:{secret}:6"], network="none", detach=True,
                         cap_add=["SYS_PTRACE"], name="watcher")
    try:
        for _ in range(40):
            res = engine.exec(watcher.id, ["true"])
            assert res.exit_code == 0, res.stderr
        assert engine.wait(watcher.id, timeout=30) == 0
        out = b"".join(line for _, line in engine.logs(watcher.id)).decode()
        assert out.strip() == "watch none", out
    finally:
        engine.rm(watcher.id, force=True)


def test_an_exec_gets_the_containers_seccomp_filter_and_capabilities(engine, ours):
    c = engine.run(IMAGE, ["sleep", "30"], network="none", detach=True, name="execd")
    try:
        res = engine.exec(c.id, ["/secprobe", "status", "unshare_user", "io_uring"])
        got = answers(res.stdout.decode())
        assert got["Seccomp"] == "2" and got["NoNewPrivs"] == "0", res.stdout
        assert got["CapEff"] == got["CapBnd"] == DOCKER_CAPS and got["CapInh"] == got["CapAmb"] == "0" * 16
        assert got["unshare_user"] == got["io_uring"] == "refused", res.stdout
    finally:
        engine.rm(c.id, force=True)
