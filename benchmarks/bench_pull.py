"""Pull from a loopback ``docker-registry``: nbcontainer vs ``skopeo copy`` vs ``podman pull``.

Builds an image with one ~100 MB random-data layer (and, with ``--debian``, a Debian minbase image
made by ``mmdebstrap``), pushes it with nbcontainer, then times cold pulls into empty stores, each
peer in the same run. Prints a Markdown table; removes its temp dirs and the registry process.

    .venv/bin/python benchmarks/bench_pull.py [--size-mb 100] [--runs 3] [--debian]

Note what each tool does: nbcontainer and ``skopeo copy … oci:`` verify and store the layer
(nbcontainer decompresses it, skopeo keeps it compressed); ``podman pull`` also unpacks it into
its overlay storage.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbcontainer.oci import MT_OCI_LAYER, Descriptor, History, ImageConfig
from nbcontainer.store import ImageStore
from nbcontainer.transfer.registry.client import RegistryClient

PODMAN_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(work: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    (work / "storage").mkdir(parents=True)
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                return proc, host
        except httpx.TransportError:
            time.sleep(0.05)
    proc.terminate()
    sys.exit("docker-registry did not start")


def random_image(store: ImageStore, name: str, size_mb: int) -> None:
    tar_path = store.root / "layer.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        per_file = 10 << 20
        left = size_mb << 20
        i = 0
        while left > 0:
            n = min(per_file, left)
            info = tarfile.TarInfo(f"data/random-{i:03d}.bin")
            info.size = n
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(os.urandom(n)))
            left -= n
            i += 1
    add_tar_image(store, name, tar_path, "ADD random data")


def add_tar_image(store: ImageStore, name: str, tar_path: Path, created_by: str) -> None:
    digest = store.content.put_file(tar_path)
    size = tar_path.stat().st_size
    tar_path.unlink()
    config = ImageConfig(architecture="amd64", created="2024-01-01T00:00:00Z", config={"Cmd": ["sh"]},
                         diff_ids=(digest,),
                         history=(History(created="2024-01-01T00:00:00Z", created_by=created_by),))
    store.add_image(config, [Descriptor(MT_OCI_LAYER, digest, size)], name)


def debian_image(store: ImageStore, name: str, work: Path) -> bool:
    if shutil.which("mmdebstrap") is None:
        return False
    out = work / "minbase.tar"
    run = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", str(out)],
                         check=False, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"mmdebstrap failed: {run.stderr.strip()[-300:]}", file=sys.stderr)
        return False
    add_tar_image(store, name, out, "mmdebstrap --variant=minbase bookworm")
    return True


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_ours(ref: str, work: Path) -> float:
    dest = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    try:
        with RegistryClient() as client:
            return timed(lambda: client.pull(ImageStore(dest), ref))
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def bench_skopeo(ref: str, work: Path) -> float | str:
    if shutil.which("skopeo") is None:
        return "n/a (skopeo not installed)"
    dest = Path(tempfile.mkdtemp(dir=work, prefix="skopeo-"))
    try:
        cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:img"]
        t = time.perf_counter()
        run = subprocess.run(cmd, check=False, capture_output=True, text=True)
        t = time.perf_counter() - t
        return t if run.returncode == 0 else f"n/a ({run.stderr.strip().splitlines()[-1][:80]})"
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def bench_podman(ref: str, work: Path) -> float | str:
    if shutil.which("podman") is None:
        return "n/a (podman not installed)"
    conf = work / "containers.conf"
    conf.write_text(PODMAN_CONF)
    root = Path(tempfile.mkdtemp(dir=work, prefix="podman-"))
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    base = ["podman", "--root", str(root / "root"), "--runroot", str(root / "run")]
    try:
        t = time.perf_counter()
        run = subprocess.run([*base, "pull", "--quiet", "--tls-verify=false", ref], check=False,
                             capture_output=True, text=True, env=env)
        t = time.perf_counter() - t
        if run.returncode != 0:
            why = run.stderr.strip().splitlines()[-1][:80] if run.stderr.strip() else run.returncode
            return f"n/a ({why})"
        return t
    finally:
        subprocess.run([*base, "system", "reset", "--force"], check=False, capture_output=True, env=env)
        shutil.rmtree(root, ignore_errors=True)


def median(values: list[float | str]) -> float | str:
    nums = [v for v in values if isinstance(v, float)]
    return statistics.median(nums) if nums else next((v for v in values if isinstance(v, str)), "n/a")


def fmt(v: float | str) -> str:
    return f"{v:.2f} s" if isinstance(v, float) else v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--debian", action="store_true", help="also pull a Debian minbase image (mmdebstrap)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nbc-bench-pull-"))
    proc = None
    try:
        proc, host = start_registry(work / "registry")
        src = ImageStore(work / "src")
        cases = []
        random_image(src, "bench/random:latest", args.size_mb)
        cases.append((f"{args.size_mb} MB random layer", "bench/random:latest", f"{host}/bench/random:1"))
        if args.debian and debian_image(src, "bench/debian:latest", work):
            cases.append(("Debian minbase (1 layer)", "bench/debian:latest", f"{host}/bench/debian:1"))
        rows = []
        with RegistryClient() as client:
            for label, local, remote in cases:
                push = timed(lambda local=local, remote=remote: client.push(src, local, remote))
                ours = [bench_ours(remote, work) for _ in range(args.runs)]
                skopeo = [bench_skopeo(remote, work) for _ in range(args.runs)]
                podman = [bench_podman(remote, work) for _ in range(args.runs)]
                rows.append((label, push, median(ours), median(skopeo), median(podman)))
        print(f"\nCold pulls from a loopback docker-registry, median of {args.runs} "
              f"({os.cpu_count()} CPUs)\n")
        print("| image | our push (gzip -1) | our pull | skopeo copy → oci: | podman pull | podman / ours |")
        print("|---|---|---|---|---|---|")
        for label, push, ours, skopeo, podman in rows:
            both = isinstance(podman, float) and isinstance(ours, float)
            ratio = f"{podman / ours:.1f}×" if both else "n/a"
            print(f"| {label} | {push:.2f} s | {fmt(ours)} | {fmt(skopeo)} | {fmt(podman)} | {ratio} |")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
