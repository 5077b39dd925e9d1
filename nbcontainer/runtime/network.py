"""Network drivers, called by the shim once the container's PID 1 reported ``ready``.

``none`` (a fresh network namespace with ``lo`` up, done by the child itself) and ``host`` (no
network namespace) need nothing here. The bridge driver (its own issue) plugs into :func:`setup`:
it receives the host pid of the container's PID 1, whose ``/proc/<pid>/ns/net`` already exists and
is not yet running user code, and creates the veth peer directly inside that namespace.
"""

from __future__ import annotations

import errno

DRIVERS = ("none", "host")


def setup(cfg: dict, pid: int) -> None:
    """Connect the network namespace of ``pid`` as ``cfg["network"]`` asks."""
    if cfg["network"] not in DRIVERS:
        raise OSError(errno.ENOTSUP, f"network {cfg['network']!r} is not supported yet")
