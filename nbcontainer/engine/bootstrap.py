"""Base images without a registry: a busybox rootfs from the host's ``busybox-static`` and a
Debian minbase rootfs from ``mmdebstrap``, written as ordinary OCI layer tars.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from nbcontainer.engine.core import Core, host_arch
from nbcontainer.errors import InvalidArgumentError, UnsupportedHostError
from nbcontainer.oci import MT_OCI_LAYER, Descriptor, History, ImageConfig
from nbcontainer.store import Image

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

_PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
_GROUP = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
tty:x:5:
www-data:x:33:
nogroup:x:65534:
"""


@dataclass(frozen=True)
class BaseRootfs:
    """What a bootstrap produced: a layer tar on disk plus the facts for the history row."""

    tar_path: str
    created: float  # seconds since the epoch, reproducible where the source allows
    created_by: str
    comment: str
    cmd: tuple[str, ...]
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and _is_static(path):
            return path
    raise UnsupportedHostError(
        "no static busybox binary found in /bin or /usr/bin",
        fix="install the Debian package 'busybox-static': apt-get install busybox-static",
    )


def _is_static(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    # A dynamically linked ELF names its interpreter (PT_INTERP) near the start.
    return head.startswith(b"\x7fELF") and b"ld-linux" not in head and b"/lib64/ld" not in head


def busybox_version(busybox: str) -> str:
    out = subprocess.run([busybox], capture_output=True, text=True, check=False).stdout
    first = out.splitlines()[0] if out else ""
    # "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary."
    return first.split()[1].lstrip("v") if first.startswith("BusyBox") else "unknown"


def write_busybox_layer(out: BinaryIO, busybox: str | None = None) -> BaseRootfs:
    """Write a deterministic busybox rootfs tar to ``out``: one binary, applet links, /etc files."""
    busybox = busybox or find_busybox()
    st = os.stat(busybox)
    mtime = int(st.st_mtime)
    listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    applets = listing.stdout.split()
    entries: dict[str, tarfile.TarInfo] = {}
    data: dict[str, bytes] = {}

    def add_dir(name: str, mode: int = 0o755) -> None:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in entries:
                ti = tarfile.TarInfo(sub)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
                entries[sub] = ti
        entries[name].mode = mode

    def add_file(name: str, content: bytes, mode: int = 0o644) -> None:
        add_dir(os.path.dirname(name))
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(content), mode, mtime
        entries[name] = ti
        data[name] = content

    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "var/www", "var/spool",
              "proc", "sys", "dev", "run"):
        add_dir(d)
    add_dir("root", 0o700)
    add_dir("tmp", 0o1777)
    add_dir("var/tmp", 0o1777)
    ti = tarfile.TarInfo("bin/busybox")
    ti.size, ti.mode, ti.mtime = st.st_size, 0o755, mtime
    entries["bin/busybox"] = ti
    for path in applets:
        name = path.lstrip("/")
        if name == "bin/busybox" or name in entries:
            continue
        add_dir(os.path.dirname(name))
        link = tarfile.TarInfo(name)
        link.type, link.mode, link.mtime = tarfile.SYMTYPE, 0o777, mtime
        link.linkname = "/bin/busybox"
        entries[name] = link
    add_file("etc/passwd", _PASSWD.encode())
    add_file("etc/group", _GROUP.encode())
    add_file("etc/shadow", b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640)
    add_file("etc/hostname", b"busybox\n")
    add_file("etc/hosts", b"127.0.0.1\tlocalhost\n")
    add_file("etc/resolv.conf", b"")
    version = busybox_version(busybox)
    add_file("etc/os-release", f'NAME="BusyBox"\nVERSION_ID="{version}"\nID=busybox\n'.encode())

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(entries):
            ti = entries[name]
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            if name == "bin/busybox":
                with open(busybox, "rb") as f:
                    tf.addfile(ti, f)
            elif name in data:
                tf.addfile(ti, io.BytesIO(data[name]))
            else:
                tf.addfile(ti)
    version = busybox_version(busybox)
    return BaseRootfs(
        tar_path="",
        created=float(mtime),
        created_by=f"/bin/sh -c #(nop) ADD busybox-static {version} ({busybox}) in / ",
        comment="nbcontainer bootstrap busybox",
        cmd=("sh",),
        env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    )


def mmdebstrap_rootfs(suite: str, out_path: str, *, variant: str = "minbase") -> BaseRootfs:
    """Run ``mmdebstrap --variant=minbase SUITE out.tar`` (needs the network to a Debian mirror)."""
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise UnsupportedHostError(
            "mmdebstrap is not installed",
            fix="install the Debian package 'mmdebstrap': apt-get install mmdebstrap",
        )
    if not suite.replace("-", "").isalnum():
        raise InvalidArgumentError(f"invalid Debian suite {suite!r}")
    env = dict(os.environ)
    env.setdefault("SOURCE_DATE_EPOCH", "0")
    proc = subprocess.run(
        [exe, f"--variant={variant}", "--quiet", "--format=tar", suite, out_path],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise InvalidArgumentError(f"mmdebstrap {suite} failed: {tail}")
    return BaseRootfs(
        tar_path=out_path,
        created=float(os.stat(out_path).st_mtime),
        created_by=f"mmdebstrap --variant={variant} {suite}",
        comment=f"nbcontainer bootstrap debian:{suite}",
        cmd=("bash",),
    )


def bootstrap(core: Core, what: str = "busybox", *, tag: str | None = None,
              progress: Callable[[int], None] | None = None) -> Image:
    """Build a base image without a registry: ``busybox`` or ``debian[:SUITE]``."""
    kind, _, suite = what.partition(":")
    if kind == "busybox":
        with core.store.content.writer() as w:
            base = write_busybox_layer(w)  # type: ignore[arg-type]
            diff_id = w.commit(what="busybox layer")
            size = w.size
        name = tag or "busybox:latest"
    elif kind == "debian":
        suite = suite or "bookworm"
        with tempfile.TemporaryDirectory(dir=core.store.content.ingest_dir) as tmp:
            out = os.path.join(tmp, "rootfs.tar")
            base = mmdebstrap_rootfs(suite, out)
            diff_id = core.store.content.put_file(out, what="debian layer")
            size = os.path.getsize(out)
        name = tag or f"debian:{suite}"
    else:
        raise InvalidArgumentError(f"unknown bootstrap source {what!r} (use busybox or debian[:SUITE])")
    created = _dt.datetime.fromtimestamp(base.created, _dt.UTC).isoformat().replace("+00:00", "Z")
    history = (
        History(created=created, created_by=base.created_by, comment=base.comment),
        History(created=created, created_by=f'/bin/sh -c #(nop)  CMD {json.dumps(list(base.cmd))}',
                empty_layer=True),
    )
    config = ImageConfig(
        architecture=host_arch(), os="linux", created=created,
        config={"Env": list(base.env), "Cmd": list(base.cmd)},
        diff_ids=(diff_id,), history=history,
    )
    return core.add_and_unpack(config, [Descriptor(MT_OCI_LAYER, diff_id, size)], name, progress)
