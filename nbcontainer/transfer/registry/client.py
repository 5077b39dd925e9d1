"""Pull and push images with any OCI distribution registry.

Locally, layers are kept uncompressed (``application/vnd.oci.image.layer.v1.tar``, blob digest ==
diff_id). So a pull downloads each compressed layer into ``ingest/pull-<hex>`` while hashing it,
verifies size and digest, decompresses it into the content store verifying the diff_id from the
config, and stores a *local* OCI manifest over the uncompressed layers; the config blob is kept
byte for byte, so the image id equals the registry's. The digest of the remote manifest (or index)
is recorded on the local manifest as the annotation ``io.nbcontainer.repo-digests``
(``name@sha256:…``, comma separated; :func:`repo_digests` reads it), Docker's ``RepoDigests``.

Layers download in parallel; an optional ``unpack`` hook extracts each one, bottom first, as soon
as it and the layers below it are in the store, while the later ones still download (Docker's
``Extracting`` then ``Pull complete``). The image is named last, so a failed pull names nothing.

A push finds blobs the registry has with a HEAD, or mounts them from another repository of the
same registry, using the v2metadata cache (:class:`~.distribution.DistributionMetadata`) instead
of compressing the layer again. A broken download is resumed with ``Range: bytes=N-`` (a few times
in the same pull, then by the next pull, which finds the partial file).

The wire mechanism lives in :mod:`.distribution`, the progress vocabulary in :mod:`.progress`.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from nbcontainer.errors import DigestMismatchError, InvalidArgumentError, NotFoundError, RegistryError
from nbcontainer.oci import (
    INDEX_TYPES,
    MT_OCI_CONFIG,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    Reference,
    layer_compression,
)
from nbcontainer.store import Image, ImageStore
from nbcontainer.transfer.progress import Progress, ProgressEvent, progress_sink
from nbcontainer.transfer.registry.auth import CredentialStore, RegistrySession, registry_host
from nbcontainer.transfer.registry.distribution import (
    CHUNK,
    DistributionMetadata,
    HashingFile,
    RemoteNotFoundError,
    blob_exists,
    fetch_layer,
    file_chunks,
    get_blob,
    get_manifest,
    host_platform,
    mount_blob,
    parse_platform,
    select_manifest,
    unlink,
    upload_blob,
)

__all__ = [
    "ANNOTATION_REPO_DIGESTS",
    "LayerResult",
    "ProgressEvent",
    "PullResult",
    "RegistryClient",
    "RemoteManifest",
    "RemoteNotFoundError",
    "Unpack",
    "host_platform",
    "parse_platform",
    "repo_digests",
]

ANNOTATION_REPO_DIGESTS = "io.nbcontainer.repo-digests"
PARALLEL = 3

Unpack = Callable[[ImageConfig, int, Callable[[int], None]], object]
"""``unpack(config, index, report)``: extract layer ``index`` of ``config`` from the store (its blob
is ``config.diff_ids[index]``, every layer below is already extracted); ``report(bytes_read)``."""


# -- repo digests ------------------------------------------------------------------------------


def repo_digests(manifest: Manifest) -> list[str]:
    """The ``name@sha256:…`` digests a local manifest was pulled as or pushed to."""
    raw = manifest.annotations.get(ANNOTATION_REPO_DIGESTS, "")
    return [x for x in raw.split(",") if x]


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerResult:
    """One layer of a pull: its diff_id (local blob), the remote blob, and what happened."""

    diff_id: Digest
    digest: Digest
    media_type: str
    size: int
    status: str  # "Pull complete" or "Already exists"
    resumed_from: int = 0


@dataclass(frozen=True)
class PullResult:
    image: Image
    digest: Digest  # the remote manifest (or index) digest, as Docker prints it
    status: str  # "Downloaded newer image for NAME" or "Image is up to date for NAME"
    layers: list[LayerResult] = field(default_factory=list)
    platform: Platform | None = None


@dataclass(frozen=True)
class RemoteManifest:
    """What ``manifest inspect`` shows: the remote manifest or index, its digest and raw bytes."""

    reference: str
    digest: Digest
    media_type: str
    manifest: Manifest | Index
    raw: bytes

    @property
    def is_index(self) -> bool:
        return isinstance(self.manifest, Index)

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.raw)


# -- the client ---------------------------------------------------------------------------------


class RegistryClient:
    """Pull, push, login/logout and remote manifest inspection for any OCI registry.

    Parameters
    ----------
    config_path
        Docker ``config.json`` with ``login`` credentials (default ``$DOCKER_CONFIG`` or ``~/.docker``).
    insecure_registries
        Registries (``host:port``) spoken to without TLS verification, falling back to plain HTTP.
        Loopback registries always use plain HTTP, as Docker does.
    timeout
        Seconds per network operation.
    progress
        None (quiet) or a callable taking :class:`ProgressEvent` (the faces' sinks draw them).
    retries
        How often a broken blob download is resumed with ``Range`` within one pull.
    """

    def __init__(
        self,
        *,
        config_path: str | os.PathLike | None = None,
        insecure_registries: tuple[str, ...] | list[str] = (),
        timeout: float = 30.0,
        progress: Progress | None = None,
        retries: int = 3,
        max_concurrent: int = PARALLEL,
    ) -> None:
        self.credentials = CredentialStore(config_path)
        self.insecure = {registry_host(r) for r in insecure_registries}
        self.timeout = timeout
        self.emit = progress_sink(progress)
        self.retries = retries
        self.max_concurrent = max_concurrent
        self._sessions: dict[str, RegistrySession] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self, registry: str) -> RegistrySession:
        host = registry_host(registry)
        with self._lock:
            sess = self._sessions.get(host)
            if sess is None:
                sess = RegistrySession(registry, credentials=self.credentials.get(registry),
                                       insecure=host in self.insecure, timeout=self.timeout)
                self._sessions[host] = sess
            return sess

    def _forget_session(self, registry: str) -> None:
        with self._lock:
            old = self._sessions.pop(registry_host(registry), None)
        if old:
            old.close()

    # -- login ------------------------------------------------------------------------------

    def login(self, registry: str, username: str, password: str) -> None:
        """Check the credentials with ``GET /v2/`` (answering the registry's challenge) and store them."""
        sess = RegistrySession(registry, credentials=(username, password),
                               insecure=registry_host(registry) in self.insecure, timeout=self.timeout)
        try:
            sess.check_login()
        finally:
            sess.close()
        self.credentials.set(registry, username, password)
        self._forget_session(registry)

    def logout(self, registry: str) -> None:
        """Forget the stored credentials of ``registry``; NotFoundError when there were none."""
        self._forget_session(registry)
        if not self.credentials.remove(registry):
            raise NotFoundError(f"not logged in to {registry}")

    # -- manifests --------------------------------------------------------------------------

    def manifest_inspect(self, ref: str, *, platform: str | None = None) -> RemoteManifest:
        """The remote manifest or index of ``ref`` without pulling; ``platform`` picks from an index."""
        r = Reference.parse(ref)
        sess = self._session(r.registry)
        scope = f"repository:{r.repository}:pull"
        digest, raw, media_type = get_manifest(sess, r, r.digest or r.tag, scope)
        if media_type in INDEX_TYPES:
            index = _decode(r, Index.from_bytes, raw)
            if platform is None:
                return RemoteManifest(str(r), digest, media_type, index, raw)
            desc, raw, media_type = select_manifest(sess, r, index, parse_platform(platform), scope)
            digest = desc.digest
        return RemoteManifest(str(r), digest, media_type, _decode(r, Manifest.from_bytes, raw), raw)

    # -- pull -------------------------------------------------------------------------------

    def pull(self, store: ImageStore, ref: str, *, platform: str | None = None,
             unpack: Unpack | None = None) -> PullResult:
        """Pull ``ref`` (tag or digest) into ``store`` and name it; returns the image and what happened.

        ``unpack`` (see :data:`Unpack`) is called for every layer, bottom first, before the image
        is named; the engine passes one that extracts into its snapshotter.

        Raises
        ------
        RemoteNotFoundError
            Unknown repository, tag, digest, or no manifest for the platform.
        RegistryError
            Unreachable registry (status 0), refused credentials (401), other answers.
        DigestMismatchError
            A manifest, config or layer whose bytes do not match its digest; nothing is named.
        """
        r = Reference.parse(ref)
        want = parse_platform(platform)
        sess = self._session(r.registry)
        scope = f"repository:{r.repository}:pull"
        top_digest, raw, media_type = get_manifest(sess, r, r.digest or r.tag, scope)
        if media_type in INDEX_TYPES:
            _, raw, media_type = select_manifest(sess, r, _decode(r, Index.from_bytes, raw), want, scope)
        self.emit(ProgressEvent(r.tag or r.digest, f"Pulling from {r.repository}"))
        manifest = _decode(r, Manifest.from_bytes, raw)
        config_bytes = get_blob(sess, r, manifest.config, scope, "config")
        config = _decode(r, ImageConfig.from_bytes, config_bytes)
        if len(config.diff_ids) != len(manifest.layers):
            raise RegistryError(f"{r.familiar}: manifest has {len(manifest.layers)} layers but the "
                                f"config lists {len(config.diff_ids)} diff_ids")
        name = str(Reference(r.registry, r.repository, r.tag)) if r.tag else None
        shown = Reference(r.registry, r.repository, r.tag, "" if r.tag else r.digest).familiar
        prior = store.refs.get(name) if name else None
        up_to_date = False
        if prior is not None:
            try:
                old = store.manifest(prior.digest)
                up_to_date = old.config.digest == manifest.config.digest and all(
                    store.content.has(d) for d in config.diff_ids)
            except (NotFoundError, InvalidArgumentError):
                up_to_date = False
        layers: list[LayerResult] = []
        if up_to_date and unpack is not None:
            for i in range(len(config.diff_ids)):
                unpack(config, i, _silent)
        elif not up_to_date:
            layers = self._pull_layers(sess, r, scope, store, manifest, config, unpack)
        image = self._record(store, config_bytes, manifest.config.digest, config.diff_ids, name,
                             f"{r.name}@{top_digest}")
        self.emit(ProgressEvent("", f"Digest: {top_digest}"))
        status = (f"Image is up to date for {shown}" if up_to_date
                  else f"Downloaded newer image for {shown}")
        self.emit(ProgressEvent("", f"Status: {status}"))
        return PullResult(image, top_digest, status, layers, config.platform)

    def _pull_layers(self, sess: RegistrySession, r: Reference, scope: str, store: ImageStore,
                     manifest: Manifest, config: ImageConfig, unpack: Unpack | None) -> list[LayerResult]:
        for desc in manifest.layers:
            if desc.urls:
                raise RegistryError(f"{r.familiar}: foreign layers ({desc.digest}) are not supported")
        slots: list[LayerResult | tuple[Descriptor, Digest]] = []
        # the config's layers and the manifest's were checked to match when they were read
        for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            if store.content.has(diff_id):
                self.emit(ProgressEvent(desc.digest.short, "Already exists"))
                slots.append(LayerResult(diff_id, desc.digest, desc.media_type, desc.size, "Already exists"))
            else:
                self.emit(ProgressEvent(desc.digest.short, "Pulling fs layer"))
                slots.append((desc, diff_id))
        layers: list[LayerResult] = []
        pool = ThreadPoolExecutor(max_workers=self.max_concurrent)
        try:
            pending = [pool.submit(self._fetch, sess, r, scope, store, *s) if isinstance(s, tuple) else s
                       for s in slots]
            for i, slot in enumerate(pending):
                lr = slot.result() if isinstance(slot, Future) else slot
                pulled = lr.status == "Pull complete"
                if unpack is not None:
                    unpack(config, i, self._extracting(lr, store) if pulled else _silent)
                if pulled:
                    self.emit(ProgressEvent(lr.digest.short, "Pull complete"))
                layers.append(lr)
        finally:
            # On failure, waiting downloads are dropped and running ones finish before we return,
            # so nothing keeps writing into the store behind the caller's back.
            pool.shutdown(wait=True, cancel_futures=True)
        meta = DistributionMetadata(store.root)
        for lr in layers:
            meta.add(lr.diff_id, digest=lr.digest, media_type=lr.media_type, size=lr.size,
                     registry=sess.host, repository=r.repository)
        return layers

    def _extracting(self, lr: LayerResult, store: ImageStore) -> Callable[[int], None]:
        sid, total = lr.digest.short, store.content.size(lr.diff_id)
        return lambda done: self.emit(ProgressEvent(sid, "Extracting", done, total))

    def _fetch(self, sess: RegistrySession, r: Reference, scope: str, store: ImageStore, desc: Descriptor,
               diff_id: Digest) -> LayerResult:
        resumed = fetch_layer(sess, r, scope, store.content, desc, diff_id, emit=self.emit,
                              retries=self.retries)
        status = "Already exists" if resumed is None else "Pull complete"
        return LayerResult(diff_id, desc.digest, desc.media_type, desc.size, status, resumed or 0)

    def _record(self, store: ImageStore, config_bytes: bytes, config_digest: Digest,
                diff_ids: tuple[Digest, ...], name: str | None, repo_digest: str) -> Image:
        """Store the local manifest (uncompressed layers, repo digests merged) and move names onto it."""
        store.content.put(config_bytes, config_digest, what="config")
        same = [img for img in store.images() if img.id == config_digest]
        repo_name = repo_digest.split("@")[0]
        digests: list[str] = []
        for img in same:
            digests.extend(d for d in repo_digests(img.manifest) if d not in digests)
        digests = [d for d in digests if d.split("@")[0] != repo_name] + [repo_digest]
        layers = tuple(Descriptor(MT_OCI_LAYER, d, store.content.size(d)) for d in diff_ids)
        manifest = Manifest(Descriptor(MT_OCI_CONFIG, config_digest, len(config_bytes)), layers,
                            MT_OCI_MANIFEST, {ANNOTATION_REPO_DIGESTS: ",".join(sorted(digests))})
        image = store.add_manifest(manifest.to_bytes(), name)
        moved = False
        for old in same:
            if old.manifest_digest == image.manifest_digest:
                continue
            for n in old.names:
                if n != name:
                    store.tag(image, n)
            store.remove(old)
            moved = True
        if moved or name is None:
            names = tuple(sorted(n for n, d in store.refs.names().items()
                                 if d.digest == image.manifest_digest))
            image = Image(image.id, image.manifest_digest, image.manifest, image.config, names)
        return image

    # -- push -------------------------------------------------------------------------------

    def push(
        self,
        store: ImageStore,
        image_ref_or_image: str | Image,
        ref: str | None = None,
        *,
        chunk_size: int = 16 << 20,
        compress_level: int = 1,
    ) -> str:
        """Push a local image to ``ref`` (default: the name it was given by); returns the manifest digest.

        Layers go as gzip (``compress_level``); blobs the registry has are skipped (HEAD), blobs in
        another repository of the same registry are mounted, blobs above ``chunk_size`` are uploaded
        in PATCH chunks.
        """
        if isinstance(image_ref_or_image, Image):
            image = image_ref_or_image
            target = ref or (image.names[0] if image.names else None)
            if target is None:
                raise InvalidArgumentError(f"image {image.short_id} has no name: give a reference to push to")
        else:
            image = store.resolve(image_ref_or_image)
            target = ref or image_ref_or_image
        r = Reference.parse(target)
        if not r.tag:
            raise InvalidArgumentError(f"cannot push to {target!r}: a tag is needed")
        r = Reference(r.registry, r.repository, r.tag)
        sess = self._session(r.registry)
        scope = f"repository:{r.repository}:pull,push"
        self.emit(ProgressEvent("", f"The push refers to repository [{r.familiar_name}]"))
        diff_ids = image.config.diff_ids
        if len(diff_ids) != len(image.manifest.layers):
            raise InvalidArgumentError(f"image {image.short_id}: layers and diff_ids disagree")
        for desc in reversed(image.manifest.layers):
            self.emit(ProgressEvent(desc.digest.short, "Preparing"))
        with ThreadPoolExecutor(max_workers=self.max_concurrent) as pool:
            futures = [pool.submit(self._push_layer, sess, r, scope, store, desc, diff_id, chunk_size,
                                   compress_level)
                       for desc, diff_id in zip(image.manifest.layers, diff_ids, strict=True)]
        pushed = [fut.result() for fut in futures]
        config_bytes = store.content.read(image.manifest.config.digest)
        config_desc = Descriptor(MT_OCI_CONFIG, image.manifest.config.digest, len(config_bytes))
        if not blob_exists(sess, r, scope, config_desc.digest):
            upload_blob(sess, r, (scope,), config_desc.digest, len(config_bytes),
                        lambda: iter([config_bytes]), chunk_size=chunk_size, emit=self.emit)
        manifest = Manifest(config_desc, tuple(pushed), MT_OCI_MANIFEST)
        body = manifest.to_bytes()
        digest = Digest.of(body)
        response = sess.request("PUT", f"/v2/{r.repository}/manifests/{r.tag}", scopes=(scope,),
                                headers={"Content-Type": MT_OCI_MANIFEST}, body=body)
        if response.status_code not in (200, 201):
            raise sess.error(response, f"cannot push manifest to {r.familiar}")
        answered = response.headers.get("docker-content-digest")
        if answered and answered != digest:
            raise DigestMismatchError(f"manifest pushed to {r.familiar}", digest, answered)
        self.emit(ProgressEvent("", f"{r.tag}: digest: {digest} size: {len(body)}"))
        self._record(store, config_bytes, image.id, diff_ids, None, f"{r.name}@{digest}")
        return str(digest)

    def _push_layer(self, sess: RegistrySession, ref: Reference, scope: str, store: ImageStore,
                    desc: Descriptor, diff_id: Digest, chunk_size: int, level: int) -> Descriptor:
        sid = desc.digest.short
        meta = DistributionMetadata(store.root)
        if layer_compression(desc.media_type):  # already compressed locally: push as it is
            path = store.content.path(desc.digest)
            if blob_exists(sess, ref, scope, desc.digest):
                self.emit(ProgressEvent(sid, "Layer already exists"))
            else:
                upload_blob(sess, ref, (scope,), desc.digest, desc.size, lambda: file_chunks(path),
                            chunk_size=chunk_size, emit=self.emit, sid=sid)
                self.emit(ProgressEvent(sid, "Pushed"))
            return Descriptor(desc.media_type, desc.digest, desc.size)
        known = [e for e in meta.get(diff_id) if e.get("mediaType", "").endswith(("gzip", "zstd"))]
        seen: set[str] = set()
        for e in known:
            if e["digest"] in seen:
                continue
            seen.add(e["digest"])
            if blob_exists(sess, ref, scope, e["digest"]):
                self.emit(ProgressEvent(sid, "Layer already exists"))
                return Descriptor(e["mediaType"], Digest(e["digest"]), int(e["size"]))
        for e in known:
            if (e.get("registry") == sess.host and e.get("repository") != ref.repository
                    and mount_blob(sess, ref, scope, e["digest"], e["repository"])):
                self.emit(ProgressEvent(sid, f"Mounted from {e['repository']}"))
                meta.add(diff_id, digest=e["digest"], media_type=e["mediaType"], size=int(e["size"]),
                         registry=sess.host, repository=ref.repository)
                return Descriptor(e["mediaType"], Digest(e["digest"]), int(e["size"]))
        tmp = store.content.ingest_dir / f"push-{os.getpid()}-{threading.get_ident()}-{diff_id.hex[:16]}"
        try:
            with open(tmp, "wb") as out, store.content.open(desc.digest) as src:
                hf = HashingFile(out)
                with gzip.GzipFile(filename="", mode="wb", fileobj=hf, compresslevel=level, mtime=0) as gz:
                    while chunk := src.read(CHUNK):
                        gz.write(chunk)
            digest, size = Digest("sha256:" + hf.hash.hexdigest()), hf.size
            if blob_exists(sess, ref, scope, digest):
                self.emit(ProgressEvent(sid, "Layer already exists"))
            else:
                upload_blob(sess, ref, (scope,), digest, size, lambda: file_chunks(tmp),
                            chunk_size=chunk_size, emit=self.emit, sid=sid, path=tmp)
                self.emit(ProgressEvent(sid, "Pushed"))
        finally:
            unlink(tmp)
        meta.add(diff_id, digest=digest, media_type=MT_OCI_LAYER_GZIP, size=size, registry=sess.host,
                 repository=ref.repository)
        return Descriptor(MT_OCI_LAYER_GZIP, digest, size)


def _silent(done: int) -> None:
    """The ``report`` for layers that were not downloaded now: their extraction is not news."""


_T = TypeVar("_T")


def _decode(ref: Reference, parse: Callable[[bytes], _T], raw: bytes) -> _T:
    """Parse a pulled manifest, index or config (schema-checked in oci.py); errors name the image."""
    try:
        return parse(raw)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"{ref.familiar}: {err}") from None
