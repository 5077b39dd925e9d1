"""Image verbs: bootstrap, import, images, history, layers, inspect, tag, rmi, df, mount, fsck."""

from __future__ import annotations

import argparse
import os
from typing import Any

from nbcontainer.analysis import units as D
from nbcontainer.verbs.grammar import Result, face_of, verb


@verb("bootstrap", "build a base image without a registry: busybox or debian[:SUITE]")
def _bootstrap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", default="busybox")
    p.add_argument("-t", "--tag", help="name of the image (default busybox:latest / debian:SUITE)")


@_bootstrap_args
def bootstrap(engine: Any, a: argparse.Namespace) -> Result:
    img = engine.bootstrap(a.source, tag=a.tag)
    return Result(img, "lines", lines=[f"Built image: {', '.join(img.familiar_names)} ({img.id})"])


@verb("import", "create an image from a rootfs tarball (like docker import)")
def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("tarball")
    p.add_argument("ref", nargs="?")
    p.add_argument("-m", "--message", default="")
    p.add_argument("-c", "--change", action="append", default=[])


@_import_args
def import_(engine: Any, a: argparse.Namespace) -> Result:
    img = engine.import_(a.tarball, a.ref, message=a.message, changes=a.change)
    return Result(img, "lines", lines=[str(img.id)])


@verb("images", "list images")
def _images_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--no-trunc", action="store_true")


@_images_args
def images(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.images()
    if a.quiet:
        ids = list(dict.fromkeys(r.id if a.no_trunc else D.short_id(r.id) for r in rows))
        return Result(rows, "lines", lines=ids)
    return Result(
        rows, columns=["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        rows=[[r.repository, r.tag, r.id if a.no_trunc else D.short_id(r.id), D.since(r.created),
               D.human_size(r.size)] for r in rows],
        frame="images",
    )


@verb("history", "show the history of an image")
def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-H", "--human", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("-q", "--quiet", action="store_true")


@_history_args
def history(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.history(a.image)
    if a.quiet:
        return Result(rows, "lines", lines=[r.id if a.no_trunc else D.short_id(r.id) if r.id != "<missing>"
                                            else r.id for r in rows])

    def fmt_id(i: str) -> str:
        return i if (a.no_trunc or i == "<missing>") else D.short_id(i)

    return Result(
        rows, columns=["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        rows=[[fmt_id(r.id), D.since(r.created) if a.human else (r.created.isoformat() if r.created else ""),
               r.created_by if a.no_trunc else D.trunc(r.created_by, 45),
               D.human_size(r.size) if a.human else str(r.size), r.comment] for r in rows],
        frame="history",
    )


@verb("layers", "list the layers of an image: digest, diff_id, chain_id, size, files, directory")
def _layers_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("--no-trunc", action="store_true")


@_layers_args
def layers(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.layers(a.image)
    t = (lambda s: s) if a.no_trunc else D.short_id
    return Result(
        rows, columns=["#", "DIGEST", "DIFF ID", "CHAIN ID", "SIZE", "FILES", "CREATED BY", "PATH"],
        rows=[[str(r.index), t(r.digest), t(r.diff_id), t(r.chain_id), D.human_size(r.size), str(r.files),
               r.created_by if a.no_trunc else D.trunc(r.created_by, 40), r.path] for r in rows],
        frame="layers",
    )


@verb("inspect", "low-level information on images or containers (JSON)")
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("objects", nargs="+", metavar="OBJECT")
    p.add_argument("--type", choices=["image", "container"])


@_inspect_args
def inspect(engine: Any, a: argparse.Namespace) -> Result:
    return Result([engine.inspect(o, type=a.type) for o in a.objects], "json")


@verb("tag", "create a tag TARGET that refers to SOURCE")
def _tag_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")


@_tag_args
def tag(engine: Any, a: argparse.Namespace) -> Result:
    return Result(engine.tag(a.source, a.target), "lines")


@verb("rmi", "remove images")
def _rmi_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true")


@_rmi_args
def rmi(engine: Any, a: argparse.Namespace) -> Result:
    results = [engine.rmi(i, force=a.force) for i in a.images]
    return Result(results, "lines", lines=[line for r in results for line in r.lines()])


@verb("df", "show disk usage")
def _df_args(p: argparse.ArgumentParser) -> None:
    pass


@_df_args
def df(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.df()
    return Result(rows, columns=["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                  rows=[[r["TYPE"], str(r["TOTAL"]), str(r["ACTIVE"]), D.human_size(r["SIZE"]),
                         D.human_size(r["RECLAIMABLE"])] for r in rows], frame="df")


@verb("mount", "mount a read-only overlay of an image on a directory")
def _mount_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")
    p.add_argument("target")


@_mount_args
def mount(engine: Any, a: argparse.Namespace) -> Result:
    return Result(engine.mount(a.image, a.target), "lines", lines=[a.target])


@verb("umount", "unmount an image mounted with mount")
def _umount_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target")


@_umount_args
def umount(engine: Any, a: argparse.Namespace) -> Result:
    engine.umount(a.target)
    return Result(None, "lines")


@verb("fsck", "check the store and (with --repair) remove leftovers of crashes")
def _fsck_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repair", action="store_true")


@_fsck_args
def fsck(engine: Any, a: argparse.Namespace) -> Result:
    problems = engine.fsck(repair=a.repair)
    return Result(problems, "lines", lines=problems or ["store is consistent"])


@verb("prune", "remove unnamed images that no container uses")
def _prune_args(p: argparse.ArgumentParser) -> None:
    pass


@_prune_args
def prune(engine: Any, a: argparse.Namespace) -> Result:
    r = engine.image_prune()
    return Result(r, "lines", lines=r.lines() or ["Total reclaimed: nothing"])


@verb("files", "every entry of every layer: path, layer, size, mode, kind, shadowed")
def _files_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image")


@_files_args
def files(engine: Any, a: argparse.Namespace) -> Result:
    layers = engine.files(a.image)
    rows = [[str(e.layer), e.kind[0].upper(), D.human_size(e.size), oct(e.mode), e.path + (
        f"  (shadowed by layer {e.shadowed_by})" if e.shadowed_by >= 0 else "")]
        for entries in layers for e in entries]
    return Result(layers, columns=["LAYER", "KIND", "SIZE", "MODE", "PATH"], rows=rows, frame="files")


@verb("save", "save images to a tar archive (docker-archive and OCI layout in one by default)")
def _save_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", dest="archive_format", default="docker+oci",
                   choices=["docker+oci", "docker-archive", "oci-archive"])
    p.add_argument("--compress", choices=["gzip", "zstd"])
    p.add_argument("images", nargs="+", metavar="IMAGE")


@_save_args
def save(engine: Any, a: argparse.Namespace) -> Result:
    with face_of(a).byte_progress("saving", None) as bar:
        engine.save(a.images, a.output, format=a.archive_format, compress=a.compress, progress=bar)
    return Result(a.output, "lines")


@verb("load", "load images from a tar archive or an OCI layout directory")
def _load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", required=True)
    p.add_argument("-q", "--quiet", action="store_true")


@_load_args
def load(engine: Any, a: argparse.Namespace) -> Result:
    from nbcontainer.transfer.archive.sources import format_loaded

    total = os.path.getsize(a.input) if os.path.isfile(a.input) else None
    with face_of(a).byte_progress("loading", None if a.quiet else total) as bar:
        loaded = engine.load(a.input, progress=bar)
    return Result(loaded, "lines", lines=format_loaded(loaded))
