"""Two store roots on one host each get a default bridge network (root only)."""

import os
import random
import secrets
import shutil
import signal
import subprocess
import time

import pytest
from nbc_testing import alive, cleanup_engine

from nbcontainer import Engine

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, bridges and overlay mounts"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


def test_a_second_store_root_gets_its_own_default_bridge_and_subnet(busybox_engine, tmp_path):
    other = Engine(tmp_path / "other")
    try:
        other.bootstrap("busybox")
        a = busybox_engine.run("busybox", ["sleep", "30"], detach=True, name="a1")
        b = other.run("busybox", ["sleep", "30"], detach=True, name="b1")
        net_a = busybox_engine.inspect(a.id)["NetworkSettings"]
        net_b = other.inspect(b.id)["NetworkSettings"]
        assert net_a["IPAddress"] and net_b["IPAddress"]
        assert net_a["IPAddress"].split(".")[:2] != net_b["IPAddress"].split(".")[:2]
        r = other.exec("b1", ["ping", "-c1", "-W2", net_b["Gateway"]])
        assert r.exit_code == 0, r.stdout + r.stderr
    finally:
        cleanup_engine(other, tmp_path / "other")
        cleanup_engine(busybox_engine, tmp_path / "store")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "nbcontainer:" not in links and " nbc0" not in links


def _nft_table() -> str:
    return subprocess.run(["nft", "list", "table", "ip", "nbcontainer"], capture_output=True, text=True,
                          check=False).stdout


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def _gone(pid: int, timeout: float) -> bool:
    """``pid`` exited (the runner may be our child: a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft binary")
def test_a_runner_whose_root_was_deleted_still_removes_its_bridge_and_nft_rules(busybox_engine, tmp_path):
    e = busybox_engine
    other = Engine(tmp_path / "other")
    mine_bridge, other_bridge = f"nbg{secrets.token_hex(2)}", f"nbo{secrets.token_hex(2)}"
    mine_subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24"
    other_subnet = mine_subnet
    while other_subnet == mine_subnet:
        other_subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24"
    try:
        other.bootstrap("busybox")
        other.network_create("kept", subnet=other_subnet, bridge=other_bridge)
        other.run("busybox", ["sleep", "60"], detach=True, name="o1", network="kept")
        e.network_create("doomed", subnet=mine_subnet, bridge=mine_bridge)
        c = e.run("busybox", ["sleep", "60"], detach=True, name="g1", network="doomed")
        e.stop(c.id, timeout=1)
        e.rm(c.id)
        before_links, before_nft = _links(), _nft_table()
        assert f" {mine_bridge}:" in before_links and f'"{mine_bridge}"' in before_nft
        assert f" {other_bridge}:" in before_links and f'"{other_bridge}"' in before_nft
        runner = int((e.root / "run" / "runner.pid").read_text())
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(str(e.root))]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], check=True)
        shutil.rmtree(e.root)

        os.kill(runner, signal.SIGTERM)
        assert _gone(runner, 10), "the runner did not exit on SIGTERM"
        after_links, after_nft = _links(), _nft_table()
        assert f"nbcontainer:{e.root}" not in after_links
        assert f" {mine_bridge}:" not in after_links
        assert mine_bridge not in after_nft and mine_subnet not in after_nft, after_nft
        # another root's bridge, rules and container are untouched
        assert f" {other_bridge}:" in after_links
        assert f'"{other_bridge}"' in after_nft and other_subnet in after_nft, after_nft
        assert other.exec("o1", ["ping", "-c1", "-W2", other_subnet.replace(".0/24", ".1")]).exit_code == 0
    finally:
        cleanup_engine(other, tmp_path / "other")  # its runner's SIGTERM takes its bridge down
    assert f" {other_bridge}:" not in _links()
