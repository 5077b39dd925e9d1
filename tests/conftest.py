"""Shared fixtures: an Engine over a fresh store root that cleans up everything it made."""

from __future__ import annotations

import pytest
from nbc_testing import HAS_BUSYBOX, ROOT, cleanup_engine


@pytest.fixture
def engine(tmp_path):
    from nbcontainer import Engine

    e = Engine(tmp_path / "store")
    yield e
    if ROOT:
        cleanup_engine(e, tmp_path)


@pytest.fixture
def busybox_engine(engine):
    if not HAS_BUSYBOX:
        pytest.skip("busybox-static is not installed")
    engine.bootstrap("busybox")
    return engine
