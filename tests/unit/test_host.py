import os

from nbcontainer.runtime.host import probe


def test_host_probe_says_what_works_in_one_line():
    caps = probe()
    line = caps.summary()
    assert "\n" not in line and line.startswith("nbcontainer: ")
    assert caps.root == (os.geteuid() == 0)
    assert caps.cgroup in ("v1", "hybrid", "v2", "none")
    if caps.root:
        assert caps.can_run and "containers" in line
    else:
        assert "need root" in line
