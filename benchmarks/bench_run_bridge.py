"""Latency of ``run --rm busybox true`` with the bridge network, next to ``none`` and podman's bridge.

Ours: snapshot prepare + create (veth born in the netns, lease, hosts) + start + wait + delete
(lease, hosts; the bridge stays until the runner stops) + snapshot remove, from
this Python process, as a notebook would. The bridge and its subnet are the benchmark's own
(``nbb<random>``, 10.251.<random>.0/24). Peer: ``podman run --rm busybox true`` on podman's default
bridge, with the containers.conf of PEERS.md. Prints a Markdown table.

Run as root: ``.venv/bin/python benchmarks/bench_run_bridge.py [N]``.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_run import WARMUP, build_rootfs, median_ms, podman_with_image

from nbcontainer.runtime import ContainerSpec, Runtime
from nbcontainer.runtime.net import ipam
from nbcontainer.snapshot import Snapshotter


def ours(root: Path, chain: str, network: str) -> Callable[[], None]:
    snap = Snapshotter(root)
    rt = Runtime(root)

    def once() -> None:
        cid = secrets.token_hex(32)
        layer = snap.prepare(cid, chain)
        rt.create(ContainerSpec(id=cid, name=f"bench-{cid[:12]}", rootfs=snap.mount(cid),
                                merged=str(layer.merged), args=["true"], network=network))
        rt.start(cid)
        code = rt.wait(cid)
        rt.delete(cid)
        snap.remove(cid)
        assert code == 0, code

    return once


def podman_bridge(work: Path, rootfs_src: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    base, env = podman_with_image(work, rootfs_src)
    host_before = _host_net_state()

    def once() -> None:
        res = subprocess.run([*base, "run", "--rm", "nbc-bench-busybox", "true"], env=env,
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError((res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1])

    def cleanup() -> None:
        subprocess.run([*base, "rmi", "-a", "-f"], env=env, capture_output=True, check=False)
        with open("/proc/self/mountinfo") as f:
            stale = [line.split()[4] for line in f if line.split()[4].startswith(str(work))]
        for path in sorted(stale, key=len, reverse=True):
            subprocess.run(["umount", "-l", path], capture_output=True, check=False)
        _restore_host_net_state(host_before)

    return once, cleanup


def _host_net_state() -> tuple[set[str], set[str], str]:
    """nft tables, links and ip_forward before podman's bridge runs (netavark leaves its own behind)."""
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        forward = f.read().strip()
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    return set(tables.splitlines()), names, forward


def _restore_host_net_state(before: tuple[set[str], set[str], str]) -> None:
    """Remove what podman's run added to the host: its nft tables, its bridge, ip_forward."""
    tables, links, forward = _host_net_state()
    for t in tables - before[0]:
        subprocess.run(["nft", "delete", *t.split()], capture_output=True, check=False)
    for link in links - before[1]:
        if link.startswith(("podman", "cni-podman", "veth")):
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
    if forward != before[2]:
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(before[2])


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_run_bridge.py needs root (namespaces, bridges, overlay, cgroups)")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    work = Path(tempfile.mkdtemp(prefix="nbc-bench-bridge-"))
    try:
        src = work / "rootfs-src"
        diff_id = build_rootfs(src)
        root = work / "store"
        snap = Snapshotter(root)
        snap.unpack(diff_id, "", diff_id, lambda d: (shutil.rmtree(d), shutil.copytree(src, d, symlinks=True),
                                                     diff_id)[2])
        ipam.create(str(root), "bench", subnet=f"10.251.{random.randint(0, 255)}.0/24",
                    bridge=f"nbb{secrets.token_hex(2)}")
        none = median_ms(ours(root, diff_id, "none"), n)
        bridge = median_ms(ours(root, diff_id, "bench"), n)
        if shutil.which("podman") is None:
            peer: float | str = "n/a (podman not installed)"
        else:
            once, cleanup = podman_bridge(work, src)
            try:
                peer = median_ms(once, n)
            except RuntimeError as err:
                peer = f"n/a ({err})"
            finally:
                cleanup()

        def fmt(v: float | str) -> str:
            return f"{v:.1f} ms" if isinstance(v, float) else v

        print(f"\nMedian of {n} runs after {WARMUP} warm-up runs, `run --rm busybox true`.\n")
        print("| what | median | ratio | goal |")
        print("|---|---|---|---|")
        print(f"| nbcontainer --network none | {fmt(none)} | 1.00x none | - |")
        print(f"| nbcontainer --network bridge (veth born in the netns, lease, hosts, route) | {fmt(bridge)} "
              f"| {bridge / none:.2f}x none | <= 4x none |")
        ratio = f"{bridge / peer:.2f}x podman" if isinstance(peer, float) else "-"
        print(f"| podman run --rm (bridge) | {fmt(peer)} | nbcontainer bridge = {ratio} | <= 0.2x podman |")
    finally:
        pid_file = work / "store" / "run" / "runner.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, 15)
                # the runner takes its idle bridges and nft rules down on SIGTERM: let it finish
                deadline = time.monotonic() + 10
                while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
