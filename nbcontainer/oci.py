"""OCI and Docker image formats as frozen dataclasses, with JSON in and out. No I/O.

Vocabulary (OCI, verbatim): a *digest* names a blob by the sha256 of its stored bytes; a layer's
*diff_id* is the sha256 of its uncompressed tar; *chain_id* folds the diff_ids bottom-up; the
*image id* is the digest of the config JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
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


# -- schema checks -----------------------------------------------------------------------------
#
# Every config, manifest and index we parse is checked against the OCI image-spec JSON schemas (types,
# descriptor fields, RFC 3339 times) before it becomes a dataclass; the error is one line naming the
# object and the field, e.g. ``image config: 'config.Env' must be a list of strings``.

MAX_HISTORY = 10_000
_MT_PART = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE_RE = re.compile(rf"^{_MT_PART}/{_MT_PART}$")
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


class _Bad(Exception):
    """A field is wrong: ``field`` names it, ``what`` says what it must be."""

    def __init__(self, field: str, what: str) -> None:
        super().__init__(field, what)
        self.field = field
        self.what = what


def _schema_error(obj: str, bad: _Bad) -> InvalidArgumentError:
    return InvalidArgumentError(f"{obj}: {bad.field!r} {bad.what}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _obj(d: dict[str, Any], key: str, path: str, *, required: bool = False) -> dict[str, Any]:
    """``d[key]`` must be an object (null or absent: empty unless ``required``)."""
    v = d.get(key)
    if v is None:
        if required:
            raise _Bad(_join(path, key), "is required (an object)")
        return {}
    if not isinstance(v, dict):
        raise _Bad(_join(path, key), "must be an object")
    return v


def _str(d: dict[str, Any], key: str, path: str, *, required: bool = False) -> None:
    v = d.get(key)
    if v is None and not required and key not in d:
        return
    if not _is_str(v):
        raise _Bad(_join(path, key), "must be a string")


def _str_list(d: dict[str, Any], key: str, path: str, *, nullable: bool = True) -> None:
    v = d.get(key)
    if key not in d or (v is None and nullable):
        return
    if not isinstance(v, list) or not all(_is_str(x) for x in v):
        raise _Bad(_join(path, key), "must be a list of strings")


def _str_map(d: dict[str, Any], key: str, path: str) -> None:
    v = d.get(key)
    if v is None:
        return
    if not isinstance(v, dict) or not all(_is_str(x) for x in v.values()):
        raise _Bad(_join(path, key), "must be an object of strings")


def _set_map(d: dict[str, Any], key: str, path: str) -> None:
    """``ExposedPorts``/``Volumes``: an object whose values are (empty) objects."""
    v = d.get(key)
    if v is None:
        return
    if not isinstance(v, dict) or not all(x is None or isinstance(x, dict) for x in v.values()):
        raise _Bad(_join(path, key), "must be an object of objects")


def _bool(d: dict[str, Any], key: str, path: str) -> None:
    v = d.get(key)
    if v is not None and not isinstance(v, bool):
        raise _Bad(_join(path, key), "must be a boolean")


def _time(d: dict[str, Any], key: str, path: str) -> None:
    """An RFC 3339 time within years 1-9999 (``""`` and null count as absent, as Docker writes them)."""
    v = d.get(key)
    if v is None or v == "":
        return
    if _is_str(v):
        m = _RFC3339_RE.match(v)
        if m:
            try:
                y, mo, da, h, mi, s = (int(x) for x in m.groups()[:6])
                tz = m.group(8)
                if tz not in ("Z", "z") and (int(tz[1:3]) > 23 or int(tz[4:6]) > 59):
                    raise ValueError(tz)
                _dt.datetime(y, mo, da, h, mi, min(s, 59))  # 60: a leap second
                if s <= 60:
                    return
            except ValueError:
                pass
    raise _Bad(_join(path, key), "must be an RFC 3339 time")


def check_digest(v: Any, field: str) -> None:
    if not _is_str(v) or not _DIGEST_RE.match(v):
        raise _Bad(field, "must be a digest (sha256: and 64 lowercase hex digits)")


def _check_platform(p: Any, path: str) -> None:
    if not isinstance(p, dict):
        raise _Bad(path, "must be an object")
    _str(p, "architecture", path, required=True)
    _str(p, "os", path, required=True)
    _str(p, "os.version", path)
    _str_list(p, "os.features", path, nullable=False)
    _str(p, "variant", path)
    _str_list(p, "features", path, nullable=False)


def _check_descriptor(d: Any, path: str) -> None:
    if not isinstance(d, dict):
        raise _Bad(path or "descriptor", "must be an object")
    mt = d.get("mediaType")
    if not isinstance(mt, str) or not _MEDIA_TYPE_RE.match(mt):
        raise _Bad(_join(path, "mediaType"), "must be a media type string (type/subtype)")
    check_digest(d.get("digest"), _join(path, "digest"))
    size = d.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 63:
        raise _Bad(_join(path, "size"), "must be a non-negative integer")
    _str_list(d, "urls", path, nullable=False)
    _str_map(d, "annotations", path)
    if d.get("platform") is not None:
        _check_platform(d["platform"], _join(path, "platform"))
    _str(d, "artifactType", path)


def _check_list(d: dict[str, Any], key: str, path: str, check: Any, *, required: bool = False) -> None:
    v = d.get(key)
    if v is None:
        if required:
            raise _Bad(_join(path, key), "is required (a list)")
        return
    if not isinstance(v, list):
        raise _Bad(_join(path, key), "must be a list")
    for i, x in enumerate(v):
        check(x, f"{_join(path, key)}[{i}]")


def _check_versioned(d: dict[str, Any]) -> None:
    sv = d.get("schemaVersion")
    if not _is_int(sv) or sv != 2:
        raise _Bad("schemaVersion", "must be the integer 2")
    mt = d.get("mediaType")
    if mt is not None and (not _is_str(mt) or not _MEDIA_TYPE_RE.match(mt)):
        raise _Bad("mediaType", "must be a media type string (type/subtype)")
    _str_map(d, "annotations", "")
    _str(d, "artifactType", "")
    if d.get("subject") is not None:
        _check_descriptor(d["subject"], "subject")


def check_manifest(d: dict[str, Any]) -> None:
    """Raise :class:`InvalidArgumentError` unless ``d`` is a schema-valid image manifest."""
    try:
        _check_versioned(d)
        if "config" not in d:
            raise _Bad("config", "is required (a descriptor)")
        _check_descriptor(d["config"], "config")
        _check_list(d, "layers", "", _check_descriptor)
    except _Bad as bad:
        raise _schema_error("image manifest", bad) from None


def check_index(d: dict[str, Any]) -> None:
    """Raise :class:`InvalidArgumentError` unless ``d`` is a schema-valid image index."""
    try:
        _check_versioned(d)
        _check_list(d, "manifests", "", _check_descriptor, required=True)
    except _Bad as bad:
        raise _schema_error("image index", bad) from None


def _check_history_row(h: Any, path: str) -> None:
    if not isinstance(h, dict):
        raise _Bad(path, "must be an object")
    _time(h, "created", path)
    for key in ("author", "created_by", "comment"):
        if h.get(key) is not None:
            _str(h, key, path)
    _bool(h, "empty_layer", path)


def _check_runtime(c: dict[str, Any]) -> None:
    p = "config"
    for key in ("User", "WorkingDir", "StopSignal", "Domainname", "Hostname", "Image"):
        if c.get(key) is not None:
            _str(c, key, p)
    for key in ("Env", "Entrypoint", "Cmd", "Shell", "OnBuild"):
        _str_list(c, key, p)
    _set_map(c, "ExposedPorts", p)
    _set_map(c, "Volumes", p)
    _str_map(c, "Labels", p)
    _bool(c, "ArgsEscaped", p)
    if c.get("Healthcheck") is not None:
        hc = c["Healthcheck"]
        if not isinstance(hc, dict):
            raise _Bad("config.Healthcheck", "must be an object")
        _str_list(hc, "Test", "config.Healthcheck")
        for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
            v = hc.get(key)
            if v is not None and not _is_int(v):
                raise _Bad(f"config.Healthcheck.{key}", "must be an integer")


def check_config(d: dict[str, Any]) -> None:
    """Raise :class:`InvalidArgumentError` unless ``d`` is a schema-valid image config."""
    try:
        _str(d, "architecture", "", required=True)
        _str(d, "os", "", required=True)
        _str(d, "variant", "")
        _str(d, "os.version", "")
        _str_list(d, "os.features", "", nullable=False)
        _time(d, "created", "")
        if d.get("author") is not None:
            _str(d, "author", "")
        _check_runtime(_obj(d, "config", ""))
        rootfs = _obj(d, "rootfs", "", required=True)
        if rootfs.get("type") != "layers":
            raise _Bad("rootfs.type", 'must be "layers"')
        diff_ids = rootfs.get("diff_ids")  # absent or null: no layers (Docker omits an empty list)
        if diff_ids is not None and not isinstance(diff_ids, list):
            raise _Bad("rootfs.diff_ids", "must be a list of digests")
        for i, x in enumerate(diff_ids or ()):
            check_digest(x, f"rootfs.diff_ids[{i}]")
        history = d.get("history")
        if isinstance(history, list) and len(history) > MAX_HISTORY:
            raise _Bad("history", f"must have at most {MAX_HISTORY} rows (has {len(history)})")
        _check_list(d, "history", "", _check_history_row)
    except _Bad as bad:
        raise _schema_error("image config", bad) from None


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
            _check_descriptor(d, "")
        except _Bad as bad:
            raise _schema_error("descriptor", bad) from None
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
        check_manifest(d)
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
        check_index(d)
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
        check_config(d)
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
