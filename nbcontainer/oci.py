"""OCI and Docker image formats as frozen dataclasses, with JSON in and out. No I/O.

Vocabulary (OCI, verbatim): a *digest* names a blob by the sha256 of its stored bytes; a layer's
*diff_id* is the sha256 of its uncompressed tar; *chain_id* folds the diff_ids bottom-up; the
*image id* is the digest of the config JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nbcontainer.errors import InvalidArgumentError

# -- media types -------------------------------------------------------------------------------

MT_OCI_LAYOUT_VERSION = "1.0.0"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = frozenset({MT_OCI_MANIFEST, MT_DOCKER_MANIFEST})
INDEX_TYPES = frozenset({MT_OCI_INDEX, MT_DOCKER_MANIFEST_LIST})
LAYER_TYPES = frozenset(
    {MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, MT_OCI_LAYER_NONDIST,
     MT_DOCKER_LAYER, MT_DOCKER_LAYER_GZIP}
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"


def layer_compression(media_type: str) -> str:
    """Return ``""``, ``"gzip"`` or ``"zstd"`` for a layer media type."""
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip"):
        return "gzip"
    if media_type.endswith("+zstd"):
        return "zstd"
    if media_type in LAYER_TYPES:
        return ""
    raise InvalidArgumentError(f"unsupported layer media type {media_type!r}")


# -- digests -----------------------------------------------------------------------------------

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class Digest(str):
    """``sha256:<64 hex>``; a ``str`` so it serialises as itself."""

    def __new__(cls, value: str) -> Digest:
        if not _DIGEST_RE.match(value):
            raise InvalidArgumentError(f"invalid digest {value!r}")
        return super().__new__(cls, value)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @property
    def algorithm(self) -> str:
        return "sha256"

    @property
    def hex(self) -> str:
        return self[7:]

    @property
    def short(self) -> str:
        return self[7:19]


def chain_ids(diff_ids: Iterable[str]) -> list[Digest]:
    """Chain ids bottom to top: ``chain(L0)=diff(L0)``, ``chain(Ln)=sha256(chain(Ln-1)+" "+diff(Ln))``."""
    out: list[Digest] = []
    for d in diff_ids:
        if not out:
            out.append(Digest(d))
        else:
            out.append(Digest.of(f"{out[-1]} {d}".encode()))
    return out


def canonical_json(obj: Any) -> bytes:
    """Compact, key-sorted JSON: one value always gives the same bytes and digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# -- descriptors, manifests, indexes -----------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    architecture: str
    os: str = "linux"
    variant: str = ""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Platform:
        return cls(d.get("architecture", ""), d.get("os", ""), d.get("variant", ""))

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform:
            d["platform"] = self.platform.to_json()
        if self.urls:
            d["urls"] = list(self.urls)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Descriptor:
        try:
            return cls(
                media_type=d.get("mediaType", ""),
                digest=Digest(d["digest"]),
                size=int(d["size"]),
                annotations=dict(d.get("annotations") or {}),
                platform=Platform.from_json(d["platform"]) if d.get("platform") else None,
                urls=tuple(d.get("urls") or ()),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidArgumentError(f"invalid descriptor {d!r}: {err}") from err

    def with_annotations(self, annotations: dict[str, str]) -> Descriptor:
        return dataclasses.replace(self, annotations=dict(annotations))


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = MT_OCI_MANIFEST
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if d.get("schemaVersion") != 2 or "config" not in d:
            raise InvalidArgumentError("not an image manifest (schemaVersion 2 with a config)")
        media_type = d.get("mediaType") or MT_OCI_MANIFEST
        return cls(
            config=Descriptor.from_json(d["config"]),
            layers=tuple(Descriptor.from_json(x) for x in d.get("layers") or ()),
            media_type=media_type,
            annotations=dict(d.get("annotations") or {}),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        return cls.from_json(_loads(data, "manifest"))


@dataclass(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...] = ()
    media_type: str = MT_OCI_INDEX
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [m.to_json() for m in self.manifests],
        }
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Index:
        if d.get("schemaVersion") != 2 or "manifests" not in d:
            raise InvalidArgumentError("not an image index (schemaVersion 2 with manifests)")
        return cls(
            manifests=tuple(Descriptor.from_json(x) for x in d.get("manifests") or ()),
            media_type=d.get("mediaType") or MT_OCI_INDEX,
            annotations=dict(d.get("annotations") or {}),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Index:
        return cls.from_json(_loads(data, "index"))


# -- image config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    created: str = ""
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.created:
            d["created"] = self.created
        if self.created_by:
            d["created_by"] = self.created_by
        if self.author:
            d["author"] = self.author
        if self.comment:
            d["comment"] = self.comment
        if self.empty_layer:
            d["empty_layer"] = True
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> History:
        return cls(
            created=d.get("created", "") or "",
            created_by=d.get("created_by", "") or "",
            author=d.get("author", "") or "",
            comment=d.get("comment", "") or "",
            empty_layer=bool(d.get("empty_layer", False)),
        )


@dataclass(frozen=True)
class ImageConfig:
    """The image configuration blob. ``config`` is the runtime part (Cmd, Env, …) as Docker spells it."""

    architecture: str
    os: str = "linux"
    created: str = ""
    author: str = ""
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    variant: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update({"architecture": self.architecture, "os": self.os})
        if self.variant:
            d["variant"] = self.variant
        if self.created:
            d["created"] = self.created
        if self.author:
            d["author"] = self.author
        d["config"] = dict(self.config)
        d["rootfs"] = {"type": "layers", "diff_ids": [str(x) for x in self.diff_ids]}
        if self.history:
            d["history"] = [h.to_json() for h in self.history]
        return d

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageConfig:
        known = {"architecture", "os", "variant", "created", "author", "config", "rootfs", "history"}
        rootfs = d.get("rootfs") or {}
        try:
            diff_ids = tuple(Digest(x) for x in rootfs.get("diff_ids") or ())
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"invalid image config: {err}") from err
        return cls(
            architecture=d.get("architecture", ""),
            os=d.get("os", "linux"),
            created=d.get("created", "") or "",
            author=d.get("author", "") or "",
            config=dict(d.get("config") or {}),
            diff_ids=diff_ids,
            history=tuple(History.from_json(h) for h in d.get("history") or ()),
            variant=d.get("variant", "") or "",
            extra={k: v for k, v in d.items() if k not in known},
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageConfig:
        return cls.from_json(_loads(data, "image config"))

    @property
    def chain_ids(self) -> list[Digest]:
        return chain_ids(self.diff_ids)

    @property
    def platform(self) -> Platform:
        return Platform(self.architecture, self.os, self.variant)


def _loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgumentError(f"invalid {what} JSON: {err}") from err
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"invalid {what} JSON: not an object")
    return obj


# -- references --------------------------------------------------------------------------------

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")


@dataclass(frozen=True)
class Reference:
    """A Docker-style image reference, normalised as Docker does.

    ``busybox`` → ``docker.io/library/busybox:latest``; ``localhost:5000/a/b@sha256:…``.
    """

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> Reference:
        raw = text
        if not text or text != text.strip():
            raise InvalidArgumentError(f"invalid reference format {raw!r}")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
            raise InvalidArgumentError(f"invalid reference format {raw!r}: control characters")
        name = text.split("@", 1)[0]
        if name.rfind(":") > name.rfind("/"):
            name = name[:name.rfind(":")]  # without the tag
        if len(name) > 255:
            raise InvalidArgumentError(f"invalid reference format {raw[:40]!r}…: repository name must not be "
                                       "longer than 255 characters")
        digest = ""
        if "@" in text:
            text, digest = text.split("@", 1)
            try:
                Digest(digest)
            except InvalidArgumentError:
                raise InvalidArgumentError(f"invalid reference format {raw!r}: bad digest") from None
        tag = ""
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1:]
            if not _TAG_RE.match(tag):
                raise InvalidArgumentError(f"invalid reference format {raw!r}: bad tag {tag!r}")
        first, _, rest = text.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, path = first, rest
            if not _DOMAIN_RE.match(registry):
                raise InvalidArgumentError(f"invalid reference format {raw!r}: bad registry")
        else:
            registry, path = DEFAULT_REGISTRY, text
        if registry in ("index.docker.io", "registry-1.docker.io"):
            registry = DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = "library/" + path
        if not _PATH_RE.match(path):
            raise InvalidArgumentError(
                f"invalid reference format {raw!r}: repository name must be lowercase"
            )
        if not tag and not digest:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest)

    @property
    def name(self) -> str:
        """``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """``busybox`` for Docker Hub library images, the full name otherwise (as Docker prints)."""
        if self.registry == DEFAULT_REGISTRY:
            return self.repository.removeprefix("library/")
        return self.name

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    @property
    def familiar(self) -> str:
        s = self.familiar_name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s
