"""Containers on overlayfs: spec, lifecycle, the runner and shim processes, cgroups.

The engine uses only these names::

    rt = Runtime(root)
    rt.create(ContainerSpec(id, name, rootfs=snapshotter.mount(key), merged=..., args=[...]))
    rt.start(id); rt.wait(id); rt.delete(id)        # or rt.run(spec, detach=False) -> RunResult

See ``client.py`` for the process model (the caller never forks; a runner does) and ``init.py``
for the child-side setup order.
"""

from nbcontainer.runtime.client import Runtime
from nbcontainer.runtime.bundle import ContainerSpec, ContainerState, RunResult

__all__ = ["ContainerSpec", "ContainerState", "RunResult", "Runtime"]
