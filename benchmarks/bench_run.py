"""Latency of running ``true`` in a busybox container, ours next to runc, crun and podman.

Ours: snapshot prepare + create + start + wait + delete + snapshot remove, called from this
(already running) Python process, as a notebook would; then again with a 1 GB resident parent,
to show the caller is never forked. Peers: ``runc run`` / ``crun run`` of the same rootfs as an OCI
bundle and ``podman run --rm --network none`` of it imported as an image. Prints a Markdown table.

Run as root: ``.venv/bin/python benchmarks/bench_run.py [N]``.
"""

from __future__ import annotations

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
PODMAN_CONF = '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n'


def build_rootfs(dest: Path) -> str:
    (dest / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list-full"], check=True, capture_output=True, text=True).stdout
    for applet in applets.split():
        path = dest / applet
        if not path.exists() and path.name != "busybox":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(os.path.relpath(dest / "bin" / "busybox", path.parent))
    for d in ("etc", "proc", "sys", "dev", "tmp", "root"):
        (dest / d).mkdir(exist_ok=True)
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return "sha256:" + hashlib.sha256(b"bench-busybox" + Path("/bin/busybox").read_bytes()).hexdigest()


def median_ms(fn: Callable[[], object], n: int) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(n):
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
        res = subprocess.run([binary, "--root", str(state), "run", "-b", str(bundle), f"b{secrets.token_hex(6)}"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError((res.stderr or res.stdout).strip().splitlines()[-1])

    return once


def podman(work: Path, rootfs_src: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    conf = work / "containers.conf"
    conf.write_text(PODMAN_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    base = ["podman", "--root", str(work / "storage"), "--runroot", str(work / "runroot")]
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs_src, arcname=".")
    subprocess.run([*base, "import", str(tar), "nbc-bench-busybox"], env=env, check=True, capture_output=True)

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


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_run.py needs root (namespaces, overlay, cgroups)")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
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
    finally:
        pid_file = work / "store" / "run" / "runner.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), 15)
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
