"""The image store: blobs (content), names (refs) and the images they make.

An :class:`Image` is a manifest in the store, its config, and the names that point at it. The
image id is the config digest, as Docker prints it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from nbcontainer.errors import InvalidArgumentError, NotFoundError
from nbcontainer.oci import (
    ANNOTATION_IMAGE_NAME,
    INDEX_TYPES,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    Reference,
)
from nbcontainer.store.content import ContentStore, Writer
from nbcontainer.store.refs import RefStore, atomic_write

__all__ = ["STORE_VERSION", "ContentStore", "Image", "ImageStore", "RefStore", "Writer", "atomic_write",
           "check_store_version"]

#: The on-disk format of a store root, kept in its ``store-version`` file (DESIGN §3). A root without
#: the file was made before it existed (format 0) and is migrated on open by writing it.
STORE_VERSION = 1
STORE_VERSION_FILE = "store-version"


def check_store_version(root: str | os.PathLike) -> int:
    """Refuse a store of a newer format; write ``store-version`` into a new or older one. Returns the
    format found (0 for a store made before the file existed, or a new empty root)."""
    path = Path(root) / STORE_VERSION_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    found = 0
    if text:
        try:
            found = int(text)
        except ValueError:
            raise InvalidArgumentError(f"store format {text[:20]!r} in {path} is not a number") from None
    if found > STORE_VERSION:
        raise InvalidArgumentError(
            f"store format {found} is newer than this nbcontainer understands ({STORE_VERSION})"
        )
    if found < STORE_VERSION:
        # 0 -> 1: nothing on disk changes but the version file itself
        atomic_write(path, f"{STORE_VERSION}\n".encode())
    return found


@dataclass(frozen=True)
class Image:
    """One image in the store: its manifest, config and names (full references)."""

    id: Digest
    manifest_digest: Digest
    manifest: Manifest
    config: ImageConfig
    names: tuple[str, ...]
    #: Why this stored image cannot be used (its config or manifest is invalid: written by an older
    #: version or damaged); "" for a good image. Only :meth:`ImageStore.images` with ``broken=True``
    #: returns such images, so listings show them and nothing else ever uses them.
    problem: str = ""

    @property
    def short_id(self) -> str:
        return self.id.short

    @property
    def size(self) -> int:
        """Bytes of the layers as stored (uncompressed locally)."""
        return sum(layer.size for layer in self.manifest.layers)

    @property
    def familiar_names(self) -> tuple[str, ...]:
        return tuple(Reference.parse(n).familiar for n in self.names)


class ImageStore:
    """Content plus names under one root, the root being a valid OCI image layout."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        check_store_version(self.root)
        self.content = ContentStore(self.root)
        self.refs = RefStore(self.root)

    # -- reading --------------------------------------------------------------------------

    def manifest(self, digest: str) -> Manifest:
        return Manifest.from_bytes(self.content.read(digest))

    def config(self, digest: str) -> ImageConfig:
        return ImageConfig.from_bytes(self.content.read(digest))

    def images(self, *, broken: bool = False) -> list[Image]:
        """The images of the store; with ``broken``, also those whose manifest or config is invalid,
        each with its :attr:`Image.problem` set (for listings; never to run or build on)."""
        by_digest: dict[str, list[str]] = {}
        media: dict[str, Descriptor] = {}
        for d in self.refs.entries():
            names = by_digest.setdefault(d.digest, [])
            media[d.digest] = d
            name = d.annotations.get(ANNOTATION_IMAGE_NAME)
            if name:
                names.append(name)
        out = []
        for digest, names in by_digest.items():
            img = self._load(media[digest], tuple(sorted(names)))
            if img is not None and (broken or not img.problem):
                out.append(img)
        return out

    def _load(self, desc: Descriptor, names: tuple[str, ...]) -> Image | None:
        if desc.media_type in INDEX_TYPES:
            return None
        manifest: Manifest | None = None
        try:
            manifest = self.manifest(desc.digest)
            config = self.config(manifest.config.digest)
        except NotFoundError:
            return None  # a leftover of an interrupted write; fsck reports it
        except InvalidArgumentError as err:
            # stored, but not valid (an older version wrote it, or it was damaged): listed with a mark
            if manifest is None:
                manifest = Manifest(Descriptor(desc.media_type, desc.digest, desc.size), ())
            placeholder = ImageConfig(architecture="", os="")
            return Image(manifest.config.digest, desc.digest, manifest, placeholder, names, str(err))
        return Image(manifest.config.digest, desc.digest, manifest, config, names)

    def resolve(self, ref: str, *, broken: bool = False) -> Image:
        """Find an image by name (``busybox``, ``busybox:1``), id or id prefix, or ``name@digest``.

        An image whose config or manifest is invalid is refused with its problem, unless ``broken``
        (for ``rmi``, which must be able to remove what ``images`` lists)."""
        img = self._resolve(ref)
        if img.problem and not broken:
            raise InvalidArgumentError(
                f"image {ref.strip()!r} is unusable ({img.problem}); remove it with rmi"
            )
        return img

    def _resolve(self, ref: str) -> Image:
        images = self.images(broken=True)
        text = ref.strip()
        if not text:
            raise InvalidArgumentError("empty image reference")
        hexpart = text.removeprefix("sha256:")
        if len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart):
            hits = {i.id: i for i in images if i.id.hex.startswith(hexpart)}
            hits.update({i.id: i for i in images if i.manifest_digest.hex == hexpart})
            if len(hits) == 1:
                return next(iter(hits.values()))
            if len(hits) > 1:
                raise InvalidArgumentError(f"image id prefix {text!r} is ambiguous")
        try:
            parsed = Reference.parse(text)
        except InvalidArgumentError:
            parsed = None
        if parsed is not None:
            for img in images:
                if parsed.digest:
                    repo_digests = img.manifest.annotations.get("io.nbcontainer.repo-digests", "").split(",")
                    if f"{parsed.name}@{parsed.digest}" in repo_digests:
                        return img
                    if img.manifest_digest == parsed.digest and (
                        any(Reference.parse(n).name == parsed.name for n in img.names) or not parsed.tag
                    ):
                        return img
                elif str(parsed) in img.names:
                    return img
        known = sorted({n for img in images for n in img.familiar_names})
        close = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NotFoundError(f"image {text!r} not found{hint}")

    # -- writing --------------------------------------------------------------------------

    def add_image(
        self, config: ImageConfig, layers: list[Descriptor], name: str | None = None,
        *, media_type: str = MT_OCI_MANIFEST, annotations: dict[str, str] | None = None,
    ) -> Image:
        """Store ``config`` and a manifest over ``layers`` (already in the store) and name it."""
        for layer in layers:
            if not self.content.has(layer.digest):
                raise NotFoundError(f"layer blob {layer.digest} not found")
        config_bytes = config.to_bytes()
        config_digest = self.content.put(config_bytes)
        cfg_type = "application/vnd.oci.image.config.v1+json"
        if media_type != MT_OCI_MANIFEST:
            cfg_type = "application/vnd.docker.container.image.v1+json"
        manifest = Manifest(
            Descriptor(cfg_type, config_digest, len(config_bytes)), tuple(layers), media_type,
            annotations or {},
        )
        return self.add_manifest(manifest.to_bytes(), name)

    def add_manifest(self, manifest_bytes: bytes, name: str | None = None) -> Image:
        manifest = Manifest.from_bytes(manifest_bytes)
        digest = self.content.put(manifest_bytes)
        desc = Descriptor(manifest.media_type, digest, len(manifest_bytes))
        full = str(Reference.parse(name)) if name else None
        self.refs.add(desc, full)
        config = self.config(manifest.config.digest)
        names = tuple(n for n, d in self.refs.names().items() if d.digest == digest)
        return Image(manifest.config.digest, digest, manifest, config, names)

    def tag(self, image: Image, name: str) -> str:
        full = str(Reference.parse(name))
        if Reference.parse(name).digest:
            raise InvalidArgumentError(f"cannot tag with a digest reference {name!r}")
        self.refs.add(Descriptor(image.manifest.media_type, image.manifest_digest,
                                 self.content.size(image.manifest_digest)), full)
        return full

    def untag(self, name: str) -> Descriptor | None:
        return self.refs.remove_name(str(Reference.parse(name)))

    def remove(self, image: Image) -> None:
        self.refs.remove_digest(image.manifest_digest)

    def referenced_blobs(self) -> set[str]:
        """Every blob that some listed manifest or index needs."""
        keep: set[str] = set()
        for d in self.refs.entries():
            self._mark(d, keep)
        return keep

    def _mark(self, desc: Descriptor, keep: set[str]) -> None:
        keep.add(desc.digest)
        if not self.content.has(desc.digest):
            return
        if desc.media_type in INDEX_TYPES:
            for child in Index.from_bytes(self.content.read(desc.digest)).manifests:
                self._mark(child, keep)
            return
        try:
            manifest = Manifest.from_bytes(self.content.read(desc.digest))
        except InvalidArgumentError:
            return
        keep.add(manifest.config.digest)
        keep.update(layer.digest for layer in manifest.layers)

    def gc(self) -> list[str]:
        """Delete blobs no manifest references; returns their digests."""
        keep = self.referenced_blobs()
        gone: list[str] = [d for d in self.content.walk() if d not in keep]
        for d in gone:
            self.content.delete(d)
        return gone
