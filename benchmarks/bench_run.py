"""Latency of running ``true`` in a busybox container, ours next to runc, crun and podman.

Ours: snapshot prepare + create + start + wait + delete + snapshot remove, called from this
(already running) Python process, as a notebook would; then again with a 1 GB resident parent,
to show the caller is never forked. Peers: ``runc run`` / ``crun run`` of the same rootfs as an OCI
bundle and ``podman run --rm --network none`` of it imported as an image. Prints a Markdown table.

Run as root: ``.venv/bin/python benchmarks/bench_run.py [N]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbcontainer.runtime import ContainerSpec, Runtime
from nbcontainer.snapshot import Mount, Snapshotter

WARMUP = 5
PODMAN_CONF = ('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
               '[engine]\nruntime = "runc"\n')


def build_rootfs(dest: Path) -> str:
    (dest / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list-full"], check=True, capture_output=True,
                             text=True).stdout
    for applet in applets.split():
        path = dest / applet
        if not path.exists() and path.name != "busybox":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(os.path.relpath(dest / "bin" / "busybox", path.parent))
    for d in ("etc", "proc", "sys", "dev", "tmp", "root"):
        (dest / d).mkdir(exist_ok=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534::/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return "sha256:" + hashlib.sha256(b"bench-busybox" + Path("/bin/busybox").read_bytes()).hexdigest()


# Runs GAP apart, as a person starts containers: a v1 cgroup attach waits for an RCU grace period
# unless another attach happened within the last one, so back-to-back loops flatter whoever is fastest.
GAP = 0.05
# --crun-v1-view: lend hugetlb to a v1 hierarchy inside a private mount namespace so crun 1.8 runs
# on this hybrid host. The kernel gives hugetlb back to v2 asynchronously (seconds to minutes after
# the namespace is gone); the benchmark waits for that, but it is a host-visible change meanwhile.
CRUN_V1_VIEW = False


def median_ms(fn: Callable[[], object], n: int, gap: float = 0.0) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def ours(root: Path, chain: str, *, volatile: bool = False) -> Callable[[], None]:
    snap = Snapshotter(root)
    rt = Runtime(root)

    def once() -> None:
        cid = secrets.token_hex(32)
        layer = snap.prepare(cid, chain)
        mount = snap.mount(cid)
        if volatile:  # what podman does for --rm containers: no sync of the upper fs on unmount
            mount = Mount(mount.type, mount.source, (*mount.options, "volatile"), mount.cwd)
        rt.create(ContainerSpec(id=cid, name=f"bench-{cid[:12]}", rootfs=mount, merged=str(layer.merged),
                                args=["true"], network="none"))
        rt.start(cid)
        code = rt.wait(cid)
        rt.delete(cid)
        snap.remove(cid)
        assert code == 0, code

    return once


def oci_bundle(work: Path, rootfs_src: Path) -> Path:
    bundle = work / "bundle"
    shutil.copytree(rootfs_src, bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["args"] = ["true"]
    cfg["process"]["terminal"] = False
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def oci_runtime(binary: str, bundle: Path, state: Path) -> Callable[[], None]:
    def once() -> None:
        argv = [binary, "--root", str(state), "run", "-b", str(bundle), f"b{secrets.token_hex(6)}"]
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError((res.stderr or res.stdout).strip().splitlines()[-1])

    return once


def podman_with_image(work: Path, rootfs_src: Path) -> tuple[list[str], dict[str, str]]:
    """podman with its storage under ``work`` and the rootfs imported as ``nbc-bench-busybox``."""
    conf = work / "containers.conf"
    conf.write_text(PODMAN_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    base = ["podman", "--root", str(work / "storage"), "--runroot", str(work / "runroot")]
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs_src, arcname=".")
    subprocess.run([*base, "import", str(tar), "nbc-bench-busybox"], env=env, check=True, capture_output=True)
    return base, env


def podman(work: Path, rootfs_src: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    base, env = podman_with_image(work, rootfs_src)

    def once() -> None:
        res = subprocess.run([*base, "run", "--rm", "--network", "none", "nbc-bench-busybox", "true"],
                             env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip().splitlines()[-1])

    def cleanup() -> None:
        subprocess.run([*base, "rmi", "-a", "-f"], env=env, capture_output=True, check=False)
        with open("/proc/self/mountinfo") as f:
            stale = [line.split()[4] for line in f if line.split()[4].startswith(str(work))]
        for path in sorted(stale, key=len, reverse=True):
            subprocess.run(["umount", "-l", path], capture_output=True, check=False)

    return once, cleanup


_V1_VIEW = """
mount --make-rprivate /
mount -t tmpfs cgroup_root /sys/fs/cgroup
for c in cpu cpuacct cpuset memory devices freezer blkio pids hugetlb; do
  mkdir /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
done
mkdir /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
exec "$0" "$@"
"""

_TIMER = """
import secrets, statistics, subprocess, sys, time
binary, root, bundle, n, gap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
def once():
    r = subprocess.run([binary, "--root", root, "run", "-b", bundle, "b" + secrets.token_hex(6)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode:
        sys.exit((r.stderr or r.stdout).strip().splitlines()[-1])
for _ in range(3):
    once()
times = []
for _ in range(n):
    time.sleep(gap)
    t = time.perf_counter(); once(); times.append(time.perf_counter() - t)
print(statistics.median(times) * 1000)
"""


def _hybrid() -> bool:
    with open("/proc/self/mountinfo") as f:
        kinds = {line.split(" - ")[1].split()[0] for line in f if " - " in line}
    return "cgroup" in kinds and "cgroup2" in kinds


def _v2_controllers() -> str:
    try:
        with open("/sys/fs/cgroup/unified/cgroup.controllers") as f:
            return f.read().strip()
    except OSError:
        return ""


_RELEASE_HUGETLB = ("mount --make-rprivate / && mount -t tmpfs none /mnt && mkdir /mnt/h && "
                    "mount -t cgroup -o hugetlb none /mnt/h && umount /mnt/h")


def _wait_v2_controllers(before: str, timeout: float = 60.0) -> None:
    """Give hugetlb back to v2. The kernel destroys a v1 hierarchy at its last unmount only if it has
    no child cgroup then; crun's last cgroup may still have been going away, so mount and unmount it
    once more (in a private namespace) until the hierarchy is gone."""
    deadline = time.monotonic() + timeout
    while _v2_controllers() != before and time.monotonic() < deadline:
        subprocess.run(["unshare", "-m", "sh", "-c", _RELEASE_HUGETLB], capture_output=True, check=False)
        time.sleep(1)
    if _v2_controllers() != before:
        print(f"warning: v2 controllers are {_v2_controllers()!r}, were {before!r}", file=sys.stderr)


def crun_in_v1_view(bundle: Path, state: Path, n: int, gap: float = 0.0) -> float | str:
    """crun 1.8 refuses hybrid cgroups: run it in a private mount namespace that shows the same v1
    hierarchies (plus hugetlb) and no v2 mount. The cgroups it makes are the real ones; nothing of
    the view outlives the namespace."""
    res = subprocess.run(["unshare", "-m", "sh", "-c", _V1_VIEW, sys.executable, "-c", _TIMER, "crun",
                          str(state), str(bundle), str(n), str(gap)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return f"n/a ({(res.stderr or res.stdout).strip().splitlines()[-1:]})"
    return float(res.stdout.strip())


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_run.py needs root (namespaces, overlay, cgroups)")
    global CRUN_V1_VIEW
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    CRUN_V1_VIEW = "--crun-v1-view" in sys.argv[1:]
    n = int(args[0]) if args else 30
    work = Path(tempfile.mkdtemp(prefix="nbc-bench-"))
    rows: list[tuple[str, str]] = []
    try:
        src = work / "rootfs-src"
        diff_id = build_rootfs(src)
        root = work / "store"
        snap = Snapshotter(root)
        snap.unpack(diff_id, "", diff_id, lambda d: (shutil.rmtree(d), shutil.copytree(src, d, symlinks=True),
                                                     diff_id)[2])
        bundle = oci_bundle(work, src)
        peers: dict[str, float | str] = {}
        for binary in ("runc", "crun"):
            if shutil.which(binary) is None:
                peers[binary] = "n/a (not installed)"
                continue
            if binary == "crun" and _hybrid() and not CRUN_V1_VIEW:
                peers["crun"] = ("n/a (crun 1.8 refuses hybrid cgroups; --crun-v1-view measures it in a "
                                 "private mount namespace)")
                continue
            if binary == "crun" and _hybrid():
                v2_before = _v2_controllers()
                try:
                    peers["crun"] = crun_in_v1_view(bundle, work / "crun-state", n)
                    peers["crun-gap"] = crun_in_v1_view(bundle, work / "crun-state", n, GAP)
                finally:
                    _wait_v2_controllers(v2_before)
                peers["crun-note"] = ("crun measured in a private mount ns with a pure-v1 cgroup view; "
                                      "hugetlb is lent to a v1 hierarchy meanwhile and back on v2 afterwards")
                continue
            try:
                peers[binary] = median_ms(oci_runtime(binary, bundle, work / f"{binary}-state"), n)
            except RuntimeError as err:
                peers[binary] = f"n/a ({err})"
        if shutil.which("podman"):
            once, cleanup = podman(work, src)
            try:
                peers["podman"] = median_ms(once, n)
            except RuntimeError as err:
                peers["podman"] = f"n/a ({err})"
            finally:
                cleanup()
        else:
            peers["podman"] = "n/a (not installed)"

        mine = median_ms(ours(root, diff_id), n)
        mine_gap = median_ms(ours(root, diff_id), n, GAP)
        if shutil.which("runc"):
            peers["runc-gap"] = median_ms(oci_runtime("runc", bundle, work / "runc-state"), n, GAP)
        mine_volatile = median_ms(ours(root, diff_id, volatile=True), n)
        ballast = bytearray(1 << 30)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        mine_big = median_ms(ours(root, diff_id), n)
        del ballast

        def fmt(v: float | str) -> str:
            return f"{v:.1f} ms" if isinstance(v, float) else v

        def ratio(v: float | str, peer: str) -> str:
            ref = peers.get(peer)
            return f"{v / ref:.2f}x" if isinstance(ref, float) and isinstance(v, float) else "-"

        rows_gap = [
            ("nbcontainer create+start+wait+delete (incl. snapshot prepare/remove)", mine_gap),
            ("runc run", peers.get("runc-gap", "n/a")),
            ("crun run", peers.get("crun-gap", peers["crun"] if isinstance(peers["crun"], str) else "n/a")),
        ]
        rows = [
            ("nbcontainer create+start+wait+delete (incl. snapshot prepare/remove)", mine),
            ("nbcontainer, same, 1 GB resident caller", mine_big),
            ("nbcontainer, same, overlay `volatile` (as podman --rm)", mine_volatile),
            ("runc run", peers["runc"]),
            ("crun run", peers["crun"]),
            ("podman run --rm --network none", peers["podman"]),
        ]
        print(f"\nMedian of {n} runs after {WARMUP} warm-up runs, `true` in busybox, network none.\n")
        print("| what | median | vs crun | vs runc |")
        print("|---|---|---|---|")
        for name, value in rows:
            print(f"| {name} | {fmt(value)} | {ratio(value, 'crun')} | {ratio(value, 'runc')} |")
        print(f"\nThe same, {GAP * 1000:.0f} ms between runs (a cold cgroup attach each time):\n")
        gap_ref = {"crun": peers.get("crun-gap"), "runc": peers.get("runc-gap")}
        print("| what | median | vs crun | vs runc |")
        print("|---|---|---|---|")
        for name, value in rows_gap:
            r = [f"{value / ref:.2f}x" if isinstance(ref, float) and isinstance(value, float) else "-"
                 for ref in (gap_ref["crun"], gap_ref["runc"])]
            print(f"| {name} | {fmt(value)} | {r[0]} | {r[1]} |")
        if "crun-note" in peers:
            print(f"\n({peers['crun-note']}: crun 1.8 refuses this host's hybrid cgroups.)")
    finally:
        pid_file = work / "store" / "run" / "runner.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), 15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
