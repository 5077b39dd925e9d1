"""Two store roots on one host each get a default bridge network (root only)."""

import os
import subprocess

import pytest
from nbc_testing import cleanup_engine

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
