"""Push, pull into an empty store and run the result (root: running needs namespaces)."""

import os

import pytest
from nbc_testing import cleanup_engine

from nbcontainer import Engine

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


def test_an_image_pushed_then_pulled_into_an_empty_store_runs(busybox_engine, registry, tmp_path):
    e = busybox_engine
    e.run("busybox", ["sh", "-c", "echo pushed > /hello"], name="p1")
    e.commit("p1", f"{registry.host}/demo/hello:1", message="for the registry")
    e.rm("p1")
    e.push(f"{registry.host}/demo/hello:1")
    fresh = Engine(tmp_path / "fresh")
    try:
        result = fresh.pull(f"{registry.host}/demo/hello:1")
        assert result.image.id == e.image(f"{registry.host}/demo/hello:1").id
        r = fresh.run(f"{registry.host}/demo/hello:1", ["cat", "/hello"], remove=True)
        assert r.exit_code == 0 and r.stdout == b"pushed\n"
        assert fresh.history(f"{registry.host}/demo/hello:1")[0].comment == "for the registry"
    finally:
        cleanup_engine(fresh, tmp_path)
