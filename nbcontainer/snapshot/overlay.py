"""overlay2-style snapshots.

Lifecycle, in containerd's words::

    unpack(chain_id, parent, diff_id, tar)  -> a committed, read-only layer
        layers/<chain_id>/{diff_id,cache_id,size,parent}
        overlay/<cache_id>/{diff/,link,lower}, overlay/l/<SHORT> -> ../<cache_id>/diff
    prepare(key, chain)                     -> an active container layer over a committed chain
        overlay/<key>/{diff/,work/,merged/,init/,link,lower}, overlay/l/<SHORT> -> ../<key>/init
    mount(key) / view(chain)                -> a Mount to hand to a helper process
    remove(key) / remove_layer(chain_id)    -> gone

Every directory is built under a temp name and renamed into place, so a crash leaves a leftover
that :meth:`Snapshotter.fsck` finds, never a half layer under a real name. A writer holds an
``flock`` on its temp dir while it fills it, so fsck leaves the temp dirs of live writers alone.

A container layer has an *init* dir, Docker's ``<id>-init`` layer: the runtime's mount targets
(``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``, ``/dev``, ``/proc``, ``/sys``) the image
lacks, as empty stubs, stacked as the topmost lower. So the upper dir holds only what the container
changed, and ``diff`` and ``commit`` never see the stubs.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import stat
import string
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from nbcontainer.errors import DigestMismatchError, InvalidArgumentError, NotFoundError
from nbcontainer.layers.overlayfs import is_opaque, is_whiteout

# The kernel copies mount options into one page; the last byte is the terminating NUL.
MAX_MOUNT_OPTIONS = 4095
_LINK_ALPHABET = string.ascii_uppercase + string.digits
_LINK_LEN = 26
# Docker's init layer (moby daemon/initlayer): dirs 0755, files 0644, owned by root.
INIT_DIRS = ("dev", "proc", "sys")
INIT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")
# fsck leaves younger leftovers alone: a writer may have made its temp dir and not yet locked it,
# or renamed a layer into place and not yet recorded it.
LEFTOVER_GRACE = 10.0
# ... and younger orphan dirs: a container layer is prepared before its container is recorded
# (``containers/<id>``), which may take long on a loaded machine.
ORPHAN_GRACE = 120.0


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
        """The lower dirs of the mount, top first, resolved through the short links: the init dir
        (when the layer has one), then the image layers' ``diff`` dirs."""
        return tuple(Path(os.path.realpath(self.path.parent / x)) for x in self.lower)

    @property
    def init(self) -> Path | None:
        """The init dir (the runtime's stub files, the topmost lower), or None for a layer made
        before init dirs existed."""
        if not self.lower:
            return None
        try:
            target = os.readlink(self.path.parent / self.lower[0])
        except OSError:
            return None
        return self.path / "init" if target == f"../{self.key}/init" else None

    @property
    def image_dirs(self) -> tuple[Path, ...]:
        """The image layers' ``diff`` dirs only, top first (``lower_dirs`` without the init dir)."""
        dirs = self.lower_dirs
        return dirs[1:] if self.init is not None else dirs

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
        with suppress(OSError):
            self.sweep()  # what killed unpacks left (an image layer's worth each)

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
            held = _hold(tmp)
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
            finally:
                os.close(held)
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
        image = self._lower_of(parent_chain)
        tmp = self.overlay_dir / f".tmp-{key}"
        tmp.mkdir()
        held = _hold(tmp)
        try:
            for sub in ("diff", "work", "merged"):
                (tmp / sub).mkdir()
            _make_init(tmp / "init", [os.path.realpath(self.overlay_dir / x) for x in image])
            link = self._new_link()
            (tmp / "link").write_text(link)
            init_link = self._new_link()
            lower = [f"l/{init_link}", *image]
            (tmp / "lower").write_text(":".join(lower))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(held)
        os.symlink(f"../{key}/diff", self.links_dir / link)
        os.symlink(f"../{key}/init", self.links_dir / init_link)
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
        """How many more image layers fit in the mount option of a container over ``n_lowers``
        image layers (relative form; the container's init dir takes one lower of its own)."""
        per = len(f"l/{'X' * _LINK_LEN}:")
        fixed = len("lowerdir=") + len(f",upperdir={'x' * 64}/diff,workdir={'x' * 64}/work")
        return max(0, (MAX_MOUNT_OPTIONS - fixed + 1) // per - n_lowers - 1)

    def remove(self, key: str) -> None:
        """Remove a container layer with its init dir and both short links."""
        _check_key(key)
        self._remove_dir(self.overlay_dir / key)

    def _remove_dir(self, path: Path) -> None:
        """Unlink the short links that point into ``overlay/<name>``, then remove it."""
        links = []
        with suppress(OSError):
            links.append((path / "link").read_text().strip())
        with suppress(OSError):
            links.append((path / "lower").read_text().split(":")[0].removeprefix("l/"))
        for link in links:
            with suppress(OSError):
                if link and os.readlink(self.links_dir / link).startswith(f"../{path.name}/"):
                    _unlink(self.links_dir / link)
        trash = self.overlay_dir / f".rm-{path.name}"
        try:
            os.replace(path, trash)
        except FileNotFoundError:
            return  # removed meanwhile
        shutil.rmtree(trash, ignore_errors=True)

    def fsck(self, *, repair: bool = False, live_keys: Collection[str] | None = None) -> list[str]:
        """Report (and with ``repair`` remove) what crashed or killed writers left behind.

        - ``.tmp-*`` and ``.rm-*`` entries under ``overlay/`` and ``layers/`` that no live writer
          holds: older than :data:`LEFTOVER_GRACE` and not locked (an unpack or prepare holds an
          ``flock`` on its ``overlay/.tmp-*`` dir; ``layers/.tmp-<chain>`` is under the layer's lock);
        - ``overlay/<cache_id>`` dirs no layer record points to (killed between the two renames);
        - container layers whose key is not in ``live_keys`` (only when it is given: the engine
          knows its containers, the snapshotter does not); a still-mounted one is reported, not removed;
          orphans younger than :data:`ORPHAN_GRACE` are left (a create in flight);
        - dangling short links in ``overlay/l``.
        """
        problems = self._leftovers(repair=repair)
        now = time.time()

        def old(path: str, grace: float) -> bool:
            try:
                return now - os.lstat(path).st_mtime >= grace
            except FileNotFoundError:
                return False

        known = {"l", "empty"}
        for e in _scandir(self.layers_dir):
            if not e.name.startswith("."):
                with suppress(OSError):
                    known.add((Path(e.path) / "cache_id").read_text().strip())
        for e in _scandir(self.overlay_dir):
            if e.name.startswith(".") or e.name in known or not e.is_dir(follow_symlinks=False):
                continue
            if not (Path(e.path) / "work").is_dir():
                if old(e.path, ORPHAN_GRACE):
                    problems.append(f"unrecorded layer dir {e.path}")
                    if repair:
                        self._remove_dir(Path(e.path))
            elif live_keys is not None and e.name not in live_keys and old(e.path, ORPHAN_GRACE):
                if os.path.ismount(Path(e.path) / "merged"):
                    problems.append(f"orphan container layer {e.path} (still mounted, left alone)")
                    continue
                problems.append(f"orphan container layer {e.path}")
                if repair:
                    self._remove_dir(Path(e.path))
        for e in _scandir(self.links_dir):
            if not os.path.exists(e.path):
                problems.append(f"dangling link {e.path}")
                if repair:
                    _unlink(Path(e.path))
        return problems

    def sweep(self) -> list[str]:
        """Remove the ``.tmp-*``/``.rm-*`` leftovers of killed writers (those no live writer holds);
        run when a snapshotter is opened, as the ingest dir is swept."""
        return self._leftovers(repair=True)

    def _leftovers(self, *, repair: bool) -> list[str]:
        problems: list[str] = []
        now = time.time()
        for base in (self.overlay_dir, self.layers_dir):
            for e in _scandir(base):
                if not e.name.startswith((".tmp-", ".rm-")):
                    continue
                try:
                    if now - e.stat(follow_symlinks=False).st_mtime < LEFTOVER_GRACE:
                        continue
                except FileNotFoundError:
                    continue
                if base == self.layers_dir and e.name.startswith(".tmp-"):
                    lock = self._try_lock("layer-" + e.name.removeprefix(".tmp-")[:16])
                else:
                    lock = _try_hold(e.path)
                if lock is None:
                    continue  # a live writer holds it
                try:
                    problems.append(f"leftover {e.path}")
                    if repair:
                        _rmtree(Path(e.path))
                finally:
                    if lock >= 0:
                        os.close(lock)
        return problems

    def _try_lock(self, name: str) -> int | None:
        """``locks/<name>.lock`` taken without waiting: its fd, or None when someone holds it."""
        path = self.locks_dir / f"{name}.lock"
        if not path.exists():
            return -1
        return _try_hold(str(path))


def _hold(path: Path) -> int:
    """An ``flock`` on a temp dir while its writer fills it (released by closing the fd)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _try_hold(path: str) -> int | None:
    """The fd of ``path`` locked without waiting, None when a live writer holds it, -1 when it
    cannot be opened (nothing to hold)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        return fd
    return fd


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        _unlink(path)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _visible(lowers: Sequence[str], rel: str) -> os.stat_result | None:
    """``lstat`` of what overlayfs would show at ``rel`` over ``lowers`` (top first), or None when
    it would show nothing: whiteouts hide, opaque dirs and non-dirs stop the merge below them. A
    non-dir on the way (``etc`` a symlink) is returned itself: ``rel`` cannot be made there."""
    layers = list(lowers)
    parts = [p for p in rel.split("/") if p]
    top: os.stat_result | None = None
    for i in range(len(parts)):
        prefix = "/".join(parts[: i + 1])
        top, below = None, []
        for lo in layers:
            try:
                st = os.lstat(os.path.join(lo, prefix))
            except (FileNotFoundError, NotADirectoryError):
                continue
            if top is None and is_whiteout(st):
                return None
            if not stat.S_ISDIR(st.st_mode):
                if top is None:
                    top = st
                break
            top = top or st
            below.append(lo)
            if is_opaque(os.path.join(lo, prefix)):
                break
        if top is None or not stat.S_ISDIR(top.st_mode):
            return top
        layers = below
    return top


def _make_init(init: Path, lowers: Sequence[str]) -> None:
    """Docker's init layer: the stubs of :data:`INIT_DIRS` and :data:`INIT_FILES` the image lacks
    (dirs 0755, files 0644, root's); a parent the image has (``/etc``) keeps the image's mode,
    owner and times, so stacking it on top changes nothing the container sees."""
    as_root = os.geteuid() == 0
    init.mkdir()
    os.chmod(init, 0o755)
    parents: dict[Path, os.stat_result | None] = {}
    for rel in (*INIT_DIRS, *INIT_FILES):
        if _visible(lowers, rel) is not None:
            continue
        path = init / rel
        if path.parent != init and path.parent not in parents:
            parents[path.parent] = _visible(lowers, os.path.dirname(rel))
            path.parent.mkdir(parents=True)
        if rel in INIT_DIRS:
            path.mkdir()
            os.chmod(path, 0o755)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
            os.chmod(path, 0o644)
        if as_root:
            os.lchown(path, 0, 0)
    for path, st in parents.items():
        os.chmod(path, stat.S_IMODE(st.st_mode) if st is not None else 0o755)
        if as_root:
            os.lchown(path, st.st_uid if st is not None else 0, st.st_gid if st is not None else 0)
        if st is not None:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


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


