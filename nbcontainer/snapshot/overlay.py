"""overlay2-style snapshots.

Lifecycle, in containerd's words::

    unpack(chain_id, parent, diff_id, tar)  -> a committed, read-only layer
        layers/<chain_id>/{diff_id,cache_id,size,parent}
        overlay/<cache_id>/{diff/,link,lower}, overlay/l/<SHORT> -> ../<cache_id>/diff
    prepare(key, chain)                     -> an active container layer over a committed chain
        overlay/<key>/{diff/,work/,merged/,link,lower}
    mount(key) / view(chain)                -> a Mount to hand to a helper process
    remove(key) / remove_layer(chain_id)    -> gone

Every directory is built under a temp name and renamed into place, so a crash leaves a leftover
that :meth:`Snapshotter.fsck` finds, never a half layer under a real name.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import string
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from nbcontainer.errors import DigestMismatchError, InvalidArgumentError, NotFoundError

# The kernel copies mount options into one page; the last byte is the terminating NUL.
MAX_MOUNT_OPTIONS = 4095
_LINK_ALPHABET = string.ascii_uppercase + string.digits
_LINK_LEN = 26


@dataclass(frozen=True)
class Mount:
    """An overlay (or bind) mount as data, like containerd's ``mount.Mount``.

    ``options`` may hold paths relative to ``cwd``; the mounter must ``chdir(cwd)`` first.
    """

    type: str
    source: str
    options: tuple[str, ...]
    cwd: str = ""

    @property
    def data(self) -> str:
        """The option string passed to mount(2) (without ``ro``/``rbind`` flags)."""
        return ",".join(o for o in self.options if o not in ("ro", "rw", "bind", "rbind"))

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    def to_json(self) -> dict:
        return {"type": self.type, "source": self.source, "options": list(self.options), "cwd": self.cwd}

    @classmethod
    def from_json(cls, d: dict) -> Mount:
        return cls(d["type"], d["source"], tuple(d["options"]), d.get("cwd", ""))


@dataclass(frozen=True)
class LayerInfo:
    chain_id: str
    diff_id: str
    cache_id: str
    parent: str
    size: int
    link: str
    path: Path  # the unpacked ``diff`` dir
    entries: int = -1  # tar members of the layer, -1 when unknown


@dataclass(frozen=True)
class ContainerLayer:
    key: str
    path: Path  # overlay/<key>
    lower: tuple[str, ...]  # short links, top first

    @property
    def lower_dirs(self) -> tuple[Path, ...]:
        """The image layers' ``diff`` dirs, top first, resolved through the short links."""
        return tuple(Path(os.path.realpath(self.path.parent / x)) for x in self.lower)

    @property
    def upper(self) -> Path:
        return self.path / "diff"

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def merged(self) -> Path:
        return self.path / "merged"


class Snapshotter:
    """Layers and container layers under ``root/layers`` and ``root/overlay``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.layers_dir = self.root / "layers"
        self.overlay_dir = self.root / "overlay"
        self.links_dir = self.overlay_dir / "l"
        self.locks_dir = self.root / "locks"
        for d in (self.layers_dir, self.links_dir, self.locks_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- committed layers -----------------------------------------------------------------

    def has_layer(self, chain_id: str) -> bool:
        return (self.layers_dir / _hex(chain_id) / "cache_id").exists()

    def layer(self, chain_id: str) -> LayerInfo:
        d = self.layers_dir / _hex(chain_id)
        try:
            cache_id = (d / "cache_id").read_text().strip()
            diff_id = (d / "diff_id").read_text().strip()
            size = int((d / "size").read_text())
            parent = (d / "parent").read_text().strip() if (d / "parent").exists() else ""
            link = (self.overlay_dir / cache_id / "link").read_text().strip()
            entries = int((d / "entries").read_text()) if (d / "entries").exists() else -1
        except FileNotFoundError:
            raise NotFoundError(f"layer {chain_id} not found") from None
        return LayerInfo(
            chain_id, diff_id, cache_id, parent, size, link, self.overlay_dir / cache_id / "diff", entries
        )

    def layers(self) -> list[LayerInfo]:
        out = []
        for entry in os.scandir(self.layers_dir):
            if entry.name.startswith("."):
                continue
            try:
                out.append(self.layer("sha256:" + entry.name))
            except NotFoundError:
                continue
        return out

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        fd = os.open(self.locks_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def unpack(
        self,
        chain_id: str,
        parent: str,
        diff_id: str,
        apply: Callable[[Path], object],
    ) -> LayerInfo:
        """Unpack a layer once. ``apply(dir)`` extracts into ``dir`` and returns the diff_id it saw
        (a string, or stats with ``diff_id`` and ``entries``).

        A layer already unpacked is returned as is (layers are shared between images).
        """
        with self._lock("layer-" + _hex(chain_id)[:16]):
            if self.has_layer(chain_id):
                return self.layer(chain_id)
            if parent and not self.has_layer(parent):
                raise NotFoundError(f"parent layer {parent} not unpacked")
            cache_id = secrets.token_hex(32)
            tmp = self.overlay_dir / f".tmp-{cache_id}"
            (tmp / "diff").mkdir(parents=True)
            try:
                stats = apply(tmp / "diff")
                seen = getattr(stats, "diff_id", stats)
                entries = getattr(stats, "entries", None)
                if seen != diff_id:
                        raise DigestMismatchError(f"layer {diff_id}", diff_id, str(seen))
                link = self._new_link()
                (tmp / "link").write_text(link)
                lower = self._lower_of(parent)
                if lower:
                    (tmp / "lower").write_text(":".join(lower))
                size = _du(tmp / "diff")
                final = self.overlay_dir / cache_id
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            os.symlink(f"../{cache_id}/diff", self.links_dir / link)
            meta_tmp = self.layers_dir / f".tmp-{_hex(chain_id)}"
            meta_tmp.mkdir()
            (meta_tmp / "diff_id").write_text(diff_id)
            (meta_tmp / "size").write_text(str(size))
            if entries is not None:
                (meta_tmp / "entries").write_text(str(entries))
            if parent:
                (meta_tmp / "parent").write_text(parent)
            (meta_tmp / "cache_id").write_text(cache_id)
            os.replace(meta_tmp, self.layers_dir / _hex(chain_id))
            return self.layer(chain_id)

    def unpack_blob(self, chain_id: str, parent: str, diff_id: str, blob: Path,
                    progress: Callable[[int], None] | None = None) -> LayerInfo:
        """Unpack one stored layer blob (plain or compressed tar) as ``chain_id`` over ``parent``."""
        from nbcontainer.layers.apply import apply_layer

        def apply(d: Path) -> object:
            return apply_layer(str(blob), str(d), progress=progress)

        return self.unpack(chain_id, parent, diff_id, apply)

    def unpack_image(self, layers: Sequence[tuple[Path, str, str]], *,
                     progress: Callable[[int], None] | None = None, undo_on_error: bool = False) -> list[str]:
        """The one unpack loop (run, pull, load, import, bootstrap): ``layers`` are ``(blob, diff_id,
        chain_id)`` bottom first; each layer not yet on disk is unpacked over the one below.

        Returns the chain ids unpacked now. With ``undo_on_error`` a failure removes them again, so
        a hostile or broken layer leaves nothing behind.
        """
        done: list[str] = []
        parent = ""
        try:
            for blob, diff_id, chain in layers:
                if not self.has_layer(chain):
                    if not blob.exists():
                        raise NotFoundError(f"layer blob of {diff_id} not found")
                    self.unpack_blob(chain, parent, diff_id, blob, progress)
                    done.append(chain)
                parent = chain
        except BaseException:
            if undo_on_error:
                for chain in reversed(done):
                    self.remove_layer(chain)
            raise
        return done

    def _new_link(self) -> str:
        while True:
            link = "".join(secrets.choice(_LINK_ALPHABET) for _ in range(_LINK_LEN))
            if not os.path.lexists(self.links_dir / link):
                return link

    def _lower_of(self, chain_id: str) -> list[str]:
        """Short links of ``chain_id`` and its parents, top first, as ``l/<SHORT>``."""
        if not chain_id:
            return []
        info = self.layer(chain_id)
        lower_file = self.overlay_dir / info.cache_id / "lower"
        below = lower_file.read_text().split(":") if lower_file.exists() else []
        return [f"l/{info.link}"] + [x for x in below if x]

    def remove_layer(self, chain_id: str) -> None:
        with self._lock("layer-" + _hex(chain_id)[:16]):
            try:
                info = self.layer(chain_id)
            except NotFoundError:
                return
            meta = self.layers_dir / _hex(chain_id)
            gone = self.layers_dir / f".rm-{_hex(chain_id)}"
            os.replace(meta, gone)
            _unlink(self.links_dir / info.link)
            trash = self.overlay_dir / f".rm-{info.cache_id}"
            os.replace(self.overlay_dir / info.cache_id, trash)
            shutil.rmtree(trash, ignore_errors=True)
            shutil.rmtree(gone, ignore_errors=True)

    # -- container layers ------------------------------------------------------------------

    def prepare(self, key: str, parent_chain: str) -> ContainerLayer:
        """Create ``overlay/<key>`` with diff/work/merged over the committed ``parent_chain``."""
        _check_key(key)
        final = self.overlay_dir / key
        if final.exists():
            raise InvalidArgumentError(f"container layer {key} already exists")
        lower = self._lower_of(parent_chain)
        tmp = self.overlay_dir / f".tmp-{key}"
        try:
            for sub in ("diff", "work", "merged"):
                (tmp / sub).mkdir(parents=True, exist_ok=True)
            link = self._new_link()
            (tmp / "link").write_text(link)
            (tmp / "lower").write_text(":".join(lower))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.symlink(f"../{key}/diff", self.links_dir / link)
        return ContainerLayer(key, final, tuple(lower))

    def container_layer(self, key: str) -> ContainerLayer:
        _check_key(key)
        path = self.overlay_dir / key
        try:
            lower = (path / "lower").read_text().strip()
        except FileNotFoundError:
            raise NotFoundError(f"container layer {key} not found") from None
        return ContainerLayer(key, path, tuple(x for x in lower.split(":") if x))

    def mount(self, key: str, *, readonly: bool = False) -> Mount:
        """The overlay mount of a container layer."""
        layer = self.container_layer(key)
        if not layer.lower:
            return Mount("bind", str(layer.upper), ("rbind", "ro" if readonly else "rw"))
        return self._overlay(
            list(layer.lower), upper=f"{key}/diff", work=f"{key}/work", readonly=readonly
        )

    def view(self, chain_id: str) -> Mount:
        """A read-only mount of a committed chain (``nbcontainer mount IMAGE DIR``)."""
        lower = self._lower_of(chain_id)
        if not lower:
            raise InvalidArgumentError("an image without layers cannot be mounted")
        if len(lower) == 1:
            # overlayfs wants two lowers when there is no upper: stack an empty dir below.
            (self.overlay_dir / "empty").mkdir(exist_ok=True)
            lower = [*lower, "empty"]
        return self._overlay(lower, readonly=True)

    def _overlay(self, lower: list[str], *, upper: str = "", work: str = "", readonly: bool = False) -> Mount:
        absolute = self._overlay_options(lower, upper, work, str(self.overlay_dir) + "/")
        if len(",".join(absolute)) <= MAX_MOUNT_OPTIONS:
            opts = absolute
        else:
            opts = self._overlay_options(lower, upper, work, "")
            if len(",".join(opts)) > MAX_MOUNT_OPTIONS:
                raise InvalidArgumentError(
                    f"{len(lower)} layers do not fit in the {MAX_MOUNT_OPTIONS}-byte overlay mount "
                    "option; squash the image (commit --squash)"
                )
        if readonly:
            opts = [*opts, "ro"]
        return Mount("overlay", "overlay", tuple(opts), str(self.overlay_dir))

    @staticmethod
    def _overlay_options(lower: list[str], upper: str, work: str, prefix: str) -> list[str]:
        opts = ["lowerdir=" + ":".join(prefix + x for x in lower)]
        if upper:
            opts += [f"upperdir={prefix}{upper}", f"workdir={prefix}{work}"]
        return opts

    def lower_budget(self, n_lowers: int) -> int:
        """How many more lower layers fit in the mount option after ``n_lowers`` (relative form)."""
        per = len(f"l/{'X' * _LINK_LEN}:")
        fixed = len("lowerdir=") + len(f",upperdir={'x' * 64}/diff,workdir={'x' * 64}/work")
        return max(0, (MAX_MOUNT_OPTIONS - fixed + 1) // per - n_lowers)

    def remove(self, key: str) -> None:
        _check_key(key)
        path = self.overlay_dir / key
        try:
            link = (path / "link").read_text().strip()
            _unlink(self.links_dir / link)
        except FileNotFoundError:
            pass
        if path.exists():
            trash = self.overlay_dir / f".rm-{key}"
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def fsck(self, *, repair: bool = False) -> list[str]:
        """Report (and with ``repair`` remove) temp dirs, dangling links and orphan dirs."""
        problems: list[str] = []
        for base in (self.overlay_dir, self.layers_dir):
            for e in os.scandir(base):
                if e.name.startswith((".tmp-", ".rm-")):
                    problems.append(f"leftover {e.path}")
                    if repair:
                        shutil.rmtree(e.path, ignore_errors=True)
        for e in os.scandir(self.links_dir):
            if not os.path.exists(e.path):
                problems.append(f"dangling link {e.path}")
                if repair:
                    _unlink(Path(e.path))
        return problems


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _check_key(key: str) -> None:
    if not key or "/" in key or key.startswith(".") or key == "l":
        raise InvalidArgumentError(f"invalid snapshot key {key!r}")


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def _du(path: Path) -> int:
    """Apparent size of regular files under ``path`` (what Docker reports as a layer size)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            total += st.st_size
    return total


