"""What this host allows, probed once, said in one line (``%load_ext`` prints it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class HostCapabilities:
    root: bool
    userns_overlay: bool  # an unprivileged user namespace can mount overlay with userxattr
    cgroup: str  # "v1", "hybrid", "v2" or "none"

    @property
    def can_run(self) -> bool:
        return self.root

    def summary(self) -> str:
        if self.root:
            return (f"nbcontainer: running as root with cgroup {self.cgroup}: containers, mounts and "
                    "every image verb are available")
        extra = (" (user namespaces with overlay userxattr work here, but rootless containers are not "
                 "supported yet)") if self.userns_overlay else ""
        return ("nbcontainer: not root: images, history, layers, files, save/load and the widgets work; "
                f"run, exec and mount need root{extra}")


def _cgroup_mode() -> str:
    try:
        with open("/proc/self/mountinfo") as f:
            fstypes = {line.split(" - ")[1].split()[0] for line in f if " - " in line}
    except OSError:
        return "none"
    if "cgroup" in fstypes and "cgroup2" in fstypes:
        return "hybrid"
    if "cgroup2" in fstypes:
        return "v2"
    return "v1" if "cgroup" in fstypes else "none"


def _userns_overlay() -> bool:
    """Try, in a child process, an overlay mount inside a new user + mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    with tempfile.TemporaryDirectory(prefix="nbc-probe-") as d:
        for sub in ("l", "u", "w", "m"):
            os.mkdir(os.path.join(d, sub))
        script = f"mount -t overlay overlay -o lowerdir={d}/l,upperdir={d}/u,workdir={d}/w,userxattr {d}/m"
        try:
            proc = subprocess.run([unshare, "-Urm", "sh", "-c", script], capture_output=True, timeout=10,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return proc.returncode == 0


@lru_cache(maxsize=1)
def probe() -> HostCapabilities:
    root = os.geteuid() == 0
    return HostCapabilities(root=root, userns_overlay=False if root else _userns_overlay(),
                            cgroup=_cgroup_mode())
