"""Containers on overlayfs: spec, lifecycle, the runner and shim processes, cgroups, networks.

The engine uses only these names (and :mod:`.network` for networks and leases)::

    rt = Runtime(root)
    rt.create(ContainerSpec(id, name, rootfs=snapshotter.mount(key), merged=..., args=[...],
                            mounts=[Volume(src, dst)], devices=[Device(...)], publish=["8080:80"]))
    rt.start(id); rt.wait(id); rt.delete(id)        # or rt.run(spec, detach=False) -> RunResult

See ``client.py`` for the process model (the caller never forks; a runner does), ``protocol.py``
for what crosses the runner's socket, ``bundle.py`` for the config every process of a container
reads, and ``init.py`` for the child-side setup order.
"""

from nbcontainer.runtime.bundle import ContainerSpec, ContainerState, Device, RunResult, Volume
from nbcontainer.runtime.client import Runtime

__all__ = ["ContainerSpec", "ContainerState", "Device", "RunResult", "Runtime", "Volume"]
