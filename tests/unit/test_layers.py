"""nbcontainer.layers: the layer filter, apply_layer, write_layer, write_flat_tar and iter_layer.

Hostile archives are built here with tarfile. Whatever a buggy extractor could write lands in a
sibling ``outside`` directory of the test's tmp dir, never in the host's real paths.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from nbcontainer import compression
from nbcontainer.errors import InvalidArgumentError, UnsafeArchiveError, UnsupportedHostError
from nbcontainer.layers import (
    LayerStats,
    apply_layer,
    iter_layer,
    layer_filter,
    open_decompressed,
    write_flat_tar,
    write_layer,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown, trusted.* xattrs")
needs_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")

MTIME = 1_700_000_000


# -- helpers ------------------------------------------------------------------------------------

def entry(name: str, kind: str = "file", data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.mode = 0o755 if kind == "dir" else 0o644
    info.mtime = MTIME
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def make_tar(*entries: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(dest, outside): outside is where an escape would land; it starts empty."""
    (tmp_path / "dest").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "dest", tmp_path / "outside"


def assert_nothing_escaped(dest: Path, outside: Path) -> None:
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dest", "outside"]


def snapshot(root: Path) -> dict[str, dict[str, object]]:
    """Everything write_layer and apply_layer promise to keep, per relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        item: dict[str, object] = {
            "type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid, "gid": st.st_gid, "mtime": int(st.st_mtime),
            "xattrs": {n: os.getxattr(path, n, follow_symlinks=False)
                       for n in os.listxattr(path, follow_symlinks=False)},
        }
        if path.is_symlink():
            item["target"] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            item["data"] = path.read_bytes()
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            item["rdev"] = st.st_rdev
        out[str(path.relative_to(root))] = item
    return out


def hardlink_groups(root: Path) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for path in root.rglob("*"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, set()).add(str(path.relative_to(root)))
    return {frozenset(g) for g in groups.values()}


def layer_bytes(upper: Path, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    write_layer(str(upper), buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


# -- layer_filter -------------------------------------------------------------------------------

def test_filter_normalises_names_and_leaves_the_input_member_alone(tmp_path: Path) -> None:
    member, _ = entry("./a//b/", "dir")
    clean = layer_filter(member, str(tmp_path))
    assert clean.name == "a/b" and member.name == "./a//b/"
    root, _ = entry("./", "dir")
    assert layer_filter(root, str(tmp_path)).name == "."
    link, _ = entry("./x", "hardlink", linkname="./a/./f")
    assert layer_filter(link, str(tmp_path)).linkname == "a/f"


def test_filter_keeps_setuid_ownership_devices_and_absolute_symlinks(tmp_path: Path) -> None:
    suid, _ = entry("bin/su", mode=0o4755, uid=0, gid=0)
    dev, _ = entry("dev/null", "chr", devmajor=1, devminor=3, mode=0o666)
    sh, _ = entry("bin/sh", "symlink", linkname="/bin/busybox")
    owned, _ = entry("home/u/f", uid=1000, gid=1000, mode=0o2750)
    for member in (suid, dev, sh, owned):
        assert layer_filter(member, str(tmp_path)) is member


def test_filter_drops_overlay_private_xattrs_and_keeps_others(tmp_path: Path) -> None:
    member, _ = entry("f", pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                                        "SCHILY.xattr.user.overlay.metacopy": "",
                                        "SCHILY.xattr.security.capability": "\x01\x00"})
    clean = layer_filter(member, str(tmp_path))
    assert clean.pax_headers == {"SCHILY.xattr.security.capability": "\x01\x00"}


def test_filter_is_pure_and_creates_nothing(tmp_path: Path) -> None:
    member, _ = entry("a/b/c/file")
    layer_filter(member, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/../../x", "./../x", "a/..", "..", "x\0y"])
def test_filter_refuses_dotdot_components(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        layer_filter(entry(name)[0], str(tmp_path))


@pytest.mark.parametrize("name,reason", [
    (".wh.", "names nothing"), ("d/.wh.", "names nothing"), (".wh..", "names nothing"),
    ("d/.wh...", "names nothing"), (".wh..wh.plnk", "other than"), ("d/.wh..wh.aufs", "other than"),
    (".wh.d/file", "last path component"),
])
def test_filter_refuses_malformed_whiteout_names(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=reason):
        layer_filter(entry(name)[0], str(tmp_path))


def test_filter_refuses_whiteouts_that_are_not_regular_files(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="regular file"):
        layer_filter(entry("d/.wh.x", "dir")[0], str(tmp_path))
    with pytest.raises(UnsafeArchiveError, match="regular file"):
        layer_filter(entry(".wh.x", "symlink", linkname="/")[0], str(tmp_path))


def test_filter_refuses_a_member_below_an_existing_symlink(dirs: tuple[Path, Path]) -> None:
    dest, outside = dirs
    (dest / "link").symlink_to(outside)
    with pytest.raises(UnsafeArchiveError, match="outside the destination"):
        layer_filter(entry("link/etc/passwd")[0], str(dest))


# -- apply_layer: hostile archives --------------------------------------------------------------

@pytest.mark.parametrize("name", ["../evil", "a/../../x", "../outside/evil"])
def test_apply_refuses_dotdot_escape_before_writing(dirs: tuple[Path, Path], name: str) -> None:
    dest, outside = dirs
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.' component"):
        apply_layer(io.BytesIO(make_tar(entry(name, data=b"pwned"))), str(dest))
    assert_nothing_escaped(dest, outside)


def test_apply_refuses_absolute_names(dirs: tuple[Path, Path]) -> None:
    dest, outside = dirs
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        apply_layer(io.BytesIO(make_tar(entry(str(outside / "abs"), data=b"pwned"))), str(dest))
    assert_nothing_escaped(dest, outside)


@pytest.mark.parametrize("target", ["outside-abs", "../outside", "/"])
def test_apply_refuses_symlink_parent_escape_before_writing(dirs: tuple[Path, Path], target: str) -> None:
    dest, outside = dirs
    linkname = {"outside-abs": str(outside), "../outside": "../outside", "/": "/"}[target]
    # through "/" the member path leads back into our own outside dir, never to the real /etc
    inner = "etc/passwd" if target != "/" else str(outside / "passwd").lstrip("/")
    tar = make_tar(entry("link", "symlink", linkname=linkname), entry(f"link/{inner}", data=b"pwned"))
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        apply_layer(io.BytesIO(tar), str(dest))
    assert_nothing_escaped(dest, outside)
    assert os.readlink(dest / "link") == linkname  # the symlink itself was fine


def test_apply_refuses_writing_through_a_symlink_even_inside_dest(dirs: tuple[Path, Path]) -> None:
    dest, _ = dirs
    tar = make_tar(entry("real", "dir"), entry("link", "symlink", linkname="real"), entry("link/f"))
    with pytest.raises(UnsafeArchiveError, match="inside the destination"):
        apply_layer(io.BytesIO(tar), str(dest))
    assert list((dest / "real").iterdir()) == []


@pytest.mark.parametrize("linkname", ["../../x", "../outside/secret", "/etc/passwd", "a/../../x", "."])
def test_apply_refuses_hardlink_escapes(dirs: tuple[Path, Path], linkname: str) -> None:
    dest, outside = dirs
    with pytest.raises(UnsafeArchiveError):
        apply_layer(io.BytesIO(make_tar(entry("h", "hardlink", linkname=linkname))), str(dest))
    assert not os.path.lexists(dest / "h")
    assert_nothing_escaped(dest, outside)


def test_apply_refuses_hardlink_through_a_symlink_parent(dirs: tuple[Path, Path]) -> None:
    dest, outside = dirs
    (outside / "secret").write_text("s")
    tar = make_tar(entry("l", "symlink", linkname=str(outside)), entry("h", "hardlink", linkname="l/secret"))
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        apply_layer(io.BytesIO(tar), str(dest))
    assert not os.path.lexists(dest / "h")
    assert (outside / "secret").stat().st_nlink == 1


def test_apply_hardlink_to_a_symlink_links_the_symlink_not_its_target(dirs: tuple[Path, Path]) -> None:
    dest, outside = dirs
    (outside / "secret").write_text("s")
    tar = make_tar(entry("s", "symlink", linkname=str(outside / "secret")),
                   entry("h", "hardlink", linkname="s"))
    apply_layer(io.BytesIO(tar), str(dest))
    assert (dest / "h").is_symlink()
    assert (outside / "secret").stat().st_nlink == 1


def test_apply_replaces_a_symlink_instead_of_writing_through_it(dirs: tuple[Path, Path]) -> None:
    dest, outside = dirs
    (outside / "target").write_text("keep")
    (dest / "f").symlink_to(outside / "target")
    (dest / "d").symlink_to(outside)
    apply_layer(io.BytesIO(make_tar(entry("f", data=b"new"), entry("d", "dir"))), str(dest))
    assert (outside / "target").read_text() == "keep"
    assert (dest / "f").read_bytes() == b"new" and not (dest / "f").is_symlink()
    assert (dest / "d").is_dir() and not (dest / "d").is_symlink()


def test_apply_refuses_malformed_whiteout_without_writing(dirs: tuple[Path, Path]) -> None:
    dest, outside = dirs
    (dest / "keep").write_text("k")
    with pytest.raises(UnsafeArchiveError):
        apply_layer(io.BytesIO(make_tar(entry(".wh..."))), str(dest))
    assert [p.name for p in dest.iterdir()] == ["keep"]
    assert_nothing_escaped(dest, outside)


# -- apply_layer: behaviour ---------------------------------------------------------------------

def test_apply_returns_diff_id_and_counts(tmp_path: Path) -> None:
    tar = make_tar(entry("d", "dir"), entry("d/a", data=b"abc"), entry("d/b", data=b"hello"),
                   entry("d/l", "symlink", linkname="a"))
    stats = apply_layer(io.BytesIO(tar), str(tmp_path / "out"))
    assert stats == LayerStats("sha256:" + hashlib.sha256(tar).hexdigest(), len(tar), 4, 8)
    assert (tmp_path / "out/d/b").read_bytes() == b"hello"


def test_apply_accepts_paths_and_streams_alike(tmp_path: Path) -> None:
    tar = make_tar(entry("f", data=b"x" * 5000))
    (tmp_path / "l.tar").write_bytes(tar)
    by_path = apply_layer(tmp_path / "l.tar", str(tmp_path / "a"))
    by_str = apply_layer(str(tmp_path / "l.tar"), str(tmp_path / "b"))
    by_stream = apply_layer(io.BytesIO(tar), str(tmp_path / "c"))
    assert by_path == by_str == by_stream


def test_apply_merges_existing_dirs_and_replaces_everything_else(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "d/old").write_text("old")
    (dest / "f/inner").mkdir(parents=True)
    (dest / "x").write_text("old")
    tar = make_tar(entry("d", "dir", mode=0o700), entry("d/new", data=b"n"), entry("f", data=b"file"),
                   entry("x", "dir"), entry("x/y", data=b"y"))
    apply_layer(io.BytesIO(tar), str(dest))
    assert sorted(p.name for p in (dest / "d").iterdir()) == ["new", "old"]
    assert stat.S_IMODE((dest / "d").stat().st_mode) == 0o700
    assert (dest / "f").read_bytes() == b"file"
    assert (dest / "x/y").read_bytes() == b"y"


def test_apply_sets_directory_modes_and_mtimes_after_their_children(tmp_path: Path) -> None:
    tar = make_tar(entry("ro", "dir", mode=0o555, mtime=MTIME - 50), entry("ro/f", data=b"1"),
                   entry("ro/sub", "dir", mode=0o500), entry("ro/sub/g", data=b"2"))
    apply_layer(io.BytesIO(tar), str(tmp_path / "out"))
    ro = tmp_path / "out/ro"
    assert stat.S_IMODE(ro.stat().st_mode) == 0o555 and int(ro.stat().st_mtime) == MTIME - 50
    assert stat.S_IMODE((ro / "sub").stat().st_mode) == 0o500
    assert (ro / "sub/g").read_bytes() == b"2"
    os.chmod(ro, 0o755)
    os.chmod(ro / "sub", 0o755)  # let pytest clean up as non-root


def test_apply_creates_missing_parents_as_plain_0755_dirs(tmp_path: Path) -> None:
    apply_layer(io.BytesIO(make_tar(entry("a/b/c", data=b"c"))), str(tmp_path / "out"))
    assert stat.S_IMODE((tmp_path / "out/a/b").stat().st_mode) == 0o755


def test_apply_hardlinks_share_the_inode(tmp_path: Path) -> None:
    tar = make_tar(entry("f", data=b"data", mode=0o4755), entry("g", "hardlink", linkname="f"),
                   entry("d/h", "hardlink", linkname="./f"))
    apply_layer(io.BytesIO(tar), str(tmp_path / "out"))
    out = tmp_path / "out"
    assert (out / "f").stat().st_ino == (out / "g").stat().st_ino == (out / "d/h").stat().st_ino
    assert (out / "f").stat().st_nlink == 3


def test_apply_hardlink_to_a_file_not_in_the_layer_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="not a file of this layer"):
        apply_layer(io.BytesIO(make_tar(entry("h", "hardlink", linkname="missing"))), str(tmp_path / "o"))


def test_apply_reports_progress_in_blob_bytes(tmp_path: Path) -> None:
    tar = make_tar(*(entry(f"f{i}", data=os.urandom(300_000)) for i in range(10)))
    blob = gzip.compress(tar)
    seen: list[int] = []
    apply_layer(io.BytesIO(blob), str(tmp_path / "out"), progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(blob)


@root_only
def test_apply_keeps_owner_setuid_and_pax_xattrs(tmp_path: Path) -> None:
    binary = b"\x01\x00\xff\xfe".decode("utf-8", "surrogateescape")
    tar = make_tar(entry("su", data=b"#!", mode=0o4755, uid=1000, gid=1001,
                         pax_headers={"SCHILY.xattr.user.tag": "v", "SCHILY.xattr.user.bin": binary}),
                   entry("l", "symlink", linkname="/nowhere", uid=7, gid=8))
    apply_layer(io.BytesIO(tar), str(tmp_path / "out"))
    st = (tmp_path / "out/su").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o4755)
    assert os.getxattr(tmp_path / "out/su", "user.bin") == b"\x01\x00\xff\xfe"
    assert os.getxattr(tmp_path / "out/su", "user.tag") == b"v"
    assert (tmp_path / "out/l").lstat().st_uid == 7


@root_only
def test_apply_turns_wh_entries_into_overlay_whiteouts(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "d/gone").mkdir(parents=True)
    (dest / "d/gone/x").write_text("x")
    tar = make_tar(entry("d", "dir"), entry("d/.wh.gone"), entry("d/keep", data=b"k"), entry(".wh.top"))
    stats = apply_layer(io.BytesIO(tar), str(dest))
    for path in (dest / "d/gone", dest / "top"):
        st = path.lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert stats.entries == 4 and not (dest / "d/.wh.gone").exists()


@root_only
def test_apply_opaque_marker_sets_trusted_xattr_and_keeps_later_entries(tmp_path: Path) -> None:
    tar = make_tar(entry("d", "dir"), entry("d/before"), entry("d/.wh..wh..opq"), entry("d/after"))
    apply_layer(io.BytesIO(tar), str(tmp_path / "out"))
    d = tmp_path / "out/d"
    assert os.getxattr(d, "trusted.overlay.opaque") == b"y"
    assert sorted(p.name for p in d.iterdir()) == ["after", "before"]


def test_apply_with_userxattr_marks_opaque_dirs_in_the_user_namespace(tmp_path: Path) -> None:
    tar = make_tar(entry("d", "dir"), entry("d/.wh..wh..opq"), entry("d/after"))
    apply_layer(io.BytesIO(tar), str(tmp_path / "out"), userxattr=True)
    assert os.getxattr(tmp_path / "out/d", "user.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(tmp_path / "out/d")


def test_apply_falls_back_to_xattr_whiteouts_when_mknod_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", refuse)
    tar = make_tar(entry("d", "dir"), entry("d/.wh.gone"))
    apply_layer(io.BytesIO(tar), str(tmp_path / "a"), userxattr=True)
    gone = tmp_path / "a/d/gone"
    assert gone.stat().st_size == 0 and "user.overlay.whiteout" in os.listxattr(gone)
    assert os.getxattr(tmp_path / "a/d", "user.overlay.opaque") == b"x"  # "holds xattr whiteouts"
    with pytest.raises(UnsupportedHostError, match="userxattr=True"):
        apply_layer(io.BytesIO(tar), str(tmp_path / "b"))


# -- compression and corrupt input --------------------------------------------------------------

@pytest.mark.parametrize("compression", ["gzip", "zstd", "xz"])
@pytest.mark.parametrize("explicit", [False, True])
def test_compressed_layers_have_the_diff_id_of_the_raw_tar(tmp_path: Path, compression: str,
                                                           explicit: bool) -> None:
    tar = make_tar(entry("d", "dir"), *(entry(f"d/f{i}", data=os.urandom(70_000)) for i in range(20)))
    if compression == "zstd":
        zstandard = pytest.importorskip("zstandard")
        blob = zstandard.ZstdCompressor().compress(tar)
    else:
        blob = gzip.compress(tar) if compression == "gzip" else lzma.compress(tar)
    raw = apply_layer(io.BytesIO(tar), str(tmp_path / "raw"))
    packed = apply_layer(io.BytesIO(blob), str(tmp_path / "packed"),
                         compression=compression if explicit else None)
    assert packed == raw and raw.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert snapshot(tmp_path / "raw") == snapshot(tmp_path / "packed")


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command")
def test_zstd_falls_back_to_the_zstd_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tar = make_tar(entry("f", data=os.urandom(3 * 1024 * 1024)))
    blob = subprocess.run(["zstd", "-c"], input=tar, capture_output=True, check=True).stdout
    monkeypatch.setattr(compression, "zstandard", None)
    stats = apply_layer(io.BytesIO(blob), str(tmp_path / "out"))
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    with pytest.raises(InvalidArgumentError, match="truncated or corrupt"):
        apply_layer(io.BytesIO(blob[: len(blob) // 2]), str(tmp_path / "cut"))


def test_open_decompressed_sniffs_a_non_seekable_stream() -> None:
    class Pipe:
        def __init__(self, data: bytes) -> None:
            self._buf = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._buf.read(min(size, 3) if size > 0 else 3)  # short reads, like a pipe

    payload = b"hello layer" * 100
    for blob in (payload, gzip.compress(payload), lzma.compress(payload)):
        with open_decompressed(Pipe(blob)) as stream:  # type: ignore[arg-type]
            out = b""
            while chunk := stream.read(4096):
                out += chunk
        assert out == payload


def test_unknown_compression_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown layer compression 'bzip2'"):
        open_decompressed(io.BytesIO(b""), "bzip2")


def _truncations() -> dict[str, bytes]:
    tar = make_tar(entry("a", data=b"A" * 3000), entry("b", data=b"B" * 100))
    header_b = 512 + 3072  # "b"'s header starts after a's header and padded data
    return {"in data": tar[:1500], "at a header boundary": tar[:header_b],
            "in a header": tar[:header_b + 100], "garbage header": tar[:header_b] + b"\x07" * 512 * 4,
            "gzip cut short": gzip.compress(tar)[:-20], "not a tar": b"just some text" * 100}


@pytest.mark.parametrize("case", list(_truncations()))
def test_truncated_or_corrupt_layer_raises_a_clear_error(tmp_path: Path, case: str) -> None:
    blob = _truncations()[case]
    with pytest.raises(InvalidArgumentError, match="layer archive is truncated or corrupt"):
        apply_layer(io.BytesIO(blob), str(tmp_path / "out"))
    with pytest.raises(InvalidArgumentError, match="layer archive is truncated or corrupt"):
        list(iter_layer(io.BytesIO(blob)))


def test_a_header_with_a_bad_checksum_is_corrupt(tmp_path: Path) -> None:
    tar = bytearray(make_tar(entry("a", data=b"A"), entry("b", data=b"B")))
    tar[1024] ^= 0x01  # "b"'s name, past a's header and data block
    with pytest.raises(InvalidArgumentError, match="bad checksum"):
        apply_layer(io.BytesIO(bytes(tar)), str(tmp_path / "out"))
    assert (tmp_path / "out/a").read_bytes() == b"A"


def test_a_layer_of_only_zero_blocks_is_empty_not_corrupt(tmp_path: Path) -> None:
    stats = apply_layer(io.BytesIO(bytes(1024)), str(tmp_path / "out"))
    assert stats == LayerStats("sha256:" + hashlib.sha256(bytes(1024)).hexdigest(), 1024, 0, 0)


# -- the tar reader against tarfile and GNU tar -------------------------------------------------

@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_iter_layer_reads_what_tarfile_reads(fmt: int) -> None:
    long_dir = "d" * 90 + "/" + "e" * 90
    entries = [entry("d", "dir"), entry(f"{long_dir}/file", data=b"x" * 700, uid=1234, gid=4321),
               entry("dev", "chr", devmajor=1, devminor=3), entry("fifo", "fifo"),
               entry("l", "symlink", linkname="/" + "t" * 99), entry("h", "hardlink", linkname="d"),
               entry("empty")]
    if fmt != tarfile.USTAR_FORMAT:  # names and numbers ustar cannot hold
        entries += [entry("n" * 150 + "/" + "f" * 150, data=b"y"), entry("big", uid=2**24, mtime=2**34),
                    entry("ünïcode", "symlink", linkname="ziel/é"),
                    entry("ll", "symlink", linkname="/" + long_dir)]
    if fmt == tarfile.PAX_FORMAT:
        entries.append(entry("x", data=b"1", pax_headers={"SCHILY.xattr.user.a": "b"}))
    tar = make_tar(*entries, fmt=fmt)
    fields = ("name", "type", "size", "mode", "uid", "gid", "mtime", "linkname", "devmajor", "devminor")
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        expected = [tuple(getattr(m, f) for f in fields) for m in tf]
    ours = [tuple(getattr(m, f) for f in fields) for m, _ in iter_layer(io.BytesIO(tar))]
    assert ours == expected


def test_iter_layer_names_every_kind() -> None:
    tar = make_tar(entry("d", "dir"), entry("d/f"), entry("d/.wh.x"), entry("d/.wh..wh..opq"),
                   entry("s", "symlink", linkname="d"), entry("h", "hardlink", linkname="d/f"),
                   entry("c", "chr", devmajor=1, devminor=3), entry("p", "fifo"))
    kinds = [(m.name, kind) for m, kind in iter_layer(io.BytesIO(tar))]
    assert kinds == [("d", "dir"), ("d/f", "file"), ("d/.wh.x", "whiteout"), ("d/.wh..wh..opq", "opaque"),
                     ("s", "symlink"), ("h", "hardlink"), ("c", "device"), ("p", "fifo")]


def _gnu_tree(root: Path) -> None:
    (root / ("long" * 40) / "sub").mkdir(parents=True)
    (root / ("long" * 40) / "sub" / ("file" * 30)).write_bytes(os.urandom(5000))
    (root / "plain.txt").write_text("plain")
    (root / "rel").symlink_to("plain.txt")
    os.link(root / "plain.txt", root / "hard")
    os.chmod(root / "plain.txt", 0o640)
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)


@needs_tar
@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "v7"])
def test_apply_extracts_gnu_tar_archives_like_tar_x(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _gnu_tree(src)
    if fmt in ("ustar", "v7"):  # they cannot hold the long names
        shutil.rmtree(src / ("long" * 40))
        os.utime(src, (MTIME, MTIME))
    blob = subprocess.run(["tar", f"--format={fmt}", "-C", str(src), "-cf", "-", "."],
                          capture_output=True, check=True).stdout
    apply_layer(io.BytesIO(blob), str(tmp_path / "ours"))
    (tmp_path / "theirs").mkdir()
    subprocess.run(["tar", "-C", str(tmp_path / "theirs"), "-xf", "-"], input=blob, check=True)
    assert snapshot(tmp_path / "ours") == snapshot(tmp_path / "theirs")
    assert hardlink_groups(tmp_path / "ours") == hardlink_groups(tmp_path / "theirs") != set()


@needs_tar
def test_apply_refuses_sparse_members(tmp_path: Path) -> None:
    with open(tmp_path / "sparse", "wb") as f:
        f.truncate(10 * 1024 * 1024)
        f.write(b"x")
    blob = subprocess.run(["tar", "--sparse", "-C", str(tmp_path), "-cf", "-", "sparse"],
                          capture_output=True, check=True).stdout
    with pytest.raises(InvalidArgumentError, match="sparse"):
        apply_layer(io.BytesIO(blob), str(tmp_path / "out"))


# -- write_layer --------------------------------------------------------------------------------

def _plain_tree(root: Path, order: int = 1) -> None:
    names = ["b", "a", "a.txt", "c/d/e", "c/d/f", "c-z"][::order]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}")
    os.link(root / "a", root / "c/hard")
    (root / "c/sym").symlink_to("../a")
    os.chmod(root / "b", 0o4711)
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)


def test_write_layer_is_byte_identical_for_the_same_dir(tmp_path: Path) -> None:
    _plain_tree(tmp_path)
    out = io.BytesIO()
    stats = write_layer(str(tmp_path), out)
    assert out.getvalue() == layer_bytes(tmp_path)
    assert stats.diff_id == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
    assert stats.size == len(out.getvalue())


def test_write_layer_does_not_depend_on_creation_order_inodes_or_host_names(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _plain_tree(tmp_path / "one", order=1)
    _plain_tree(tmp_path / "two", order=-1)
    assert layer_bytes(tmp_path / "one") == layer_bytes(tmp_path / "two")
    for member, _ in iter_layer(io.BytesIO(layer_bytes(tmp_path / "one"))):
        assert member.uname == member.gname == "" and isinstance(member.mtime, int)


def test_write_layer_sorts_entries_with_parents_first(tmp_path: Path) -> None:
    _plain_tree(tmp_path)
    names = [m.name for m, _ in iter_layer(io.BytesIO(layer_bytes(tmp_path)))]
    assert names == ["a", "a.txt", "b", "c", "c/d", "c/d/e", "c/d/f", "c/hard", "c/sym", "c-z"]
    kinds = {m.name: (kind, m.linkname) for m, kind in iter_layer(io.BytesIO(layer_bytes(tmp_path)))}
    assert kinds["c/hard"] == ("hardlink", "a") and kinds["c/sym"] == ("symlink", "../a")


def test_write_layer_refuses_files_named_like_whiteouts(tmp_path: Path) -> None:
    (tmp_path / ".wh.sneaky").write_text("")
    with pytest.raises(InvalidArgumentError, match="reserved for whiteouts"):
        write_layer(str(tmp_path), io.BytesIO())


@root_only
def test_write_layer_turns_overlay_whiteouts_into_wh_entries(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/z").write_text("z")
    os.mknod(tmp_path / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.utime(tmp_path / "gone", (MTIME, MTIME))
    os.setxattr(tmp_path / "d", "trusted.overlay.opaque", b"y")
    os.setxattr(tmp_path / "d", "trusted.overlay.impure", b"y")
    os.setxattr(tmp_path / "d/z", "user.kept", b"yes")
    members = [(m, kind) for m, kind in iter_layer(io.BytesIO(layer_bytes(tmp_path)))]
    assert [(m.name, kind) for m, kind in members] == [
        (".wh.gone", "whiteout"), ("d", "dir"), ("d/.wh..wh..opq", "opaque"), ("d/z", "file")]
    wh = members[0][0]
    assert (wh.mode, wh.uid, wh.gid, wh.size, wh.mtime) == (0, 0, 0, 0, MTIME)
    assert members[1][0].pax_headers == {}
    assert members[3][0].pax_headers == {"SCHILY.xattr.user.kept": "yes"}


def test_write_layer_reads_xattr_whiteouts_with_userxattr(tmp_path: Path) -> None:
    (tmp_path / "gone").write_bytes(b"")
    os.setxattr(tmp_path / "gone", "user.overlay.whiteout", b"")
    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", "user.overlay.opaque", b"y")
    kinds = [(m.name, kind) for m, kind in iter_layer(io.BytesIO(layer_bytes(tmp_path, userxattr=True)))]
    assert kinds == [(".wh.gone", "whiteout"), ("d", "dir"), ("d/.wh..wh..opq", "opaque")]


@root_only
def test_write_layer_refuses_metacopy_uppers(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    os.setxattr(tmp_path / "f", "trusted.overlay.metacopy", b"")
    with pytest.raises(UnsupportedHostError, match="metacopy=off"):
        write_layer(str(tmp_path), io.BytesIO())


# -- round trip ---------------------------------------------------------------------------------

def _rich_upper(root: Path) -> None:
    """An upper dir with every kind of entry a container can leave behind."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/su").write_bytes(b"\x7fELF" + os.urandom(20_000))
    os.chmod(root / "usr/bin/su", 0o4755)
    (root / "tmp").mkdir(mode=0o777)
    os.chmod(root / "tmp", 0o1777)
    (root / "srv/group").mkdir(parents=True)
    os.chmod(root / "srv/group", 0o2775)
    (root / "srv/ro").mkdir()
    (root / "srv/ro/f").write_text("read only dir")
    (root / "bin").symlink_to("usr/bin")
    (root / "sh").symlink_to("/bin/busybox")
    (root / "data").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    os.link(root / "data", root / "srv/data-link")
    os.link(root / "data", root / "usr/data-link")
    os.mkfifo(root / "fifo")
    (root / ("deep" * 30)).mkdir()
    (root / ("deep" * 30) / "ünïcode-é.txt").write_text("é")
    os.setxattr(root / "data", "user.note", b"\x00\xffbinary")
    if os.geteuid() == 0:
        os.chown(root / "srv/group", 1000, 1000)
        os.chown(root / "bin", 33, 33, follow_symlinks=False)
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(root / "gone", stat.S_IFCHR, os.makedev(0, 0))
        (root / "opaque").mkdir()
        (root / "opaque/new").write_text("new")
        os.setxattr(root / "opaque", "trusted.overlay.opaque", b"y")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (MTIME, MTIME + 1), follow_symlinks=False)
    os.chmod(root / "srv/ro", 0o555)


def test_round_trip_keeps_types_modes_owners_links_content_and_whiteouts(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    upper.mkdir()
    _rich_upper(upper)
    blob = layer_bytes(upper)
    stats = apply_layer(io.BytesIO(blob), str(lower))
    assert stats.diff_id == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert snapshot(lower) == snapshot(upper)
    assert hardlink_groups(lower) == hardlink_groups(upper) == {
        frozenset({"data", "srv/data-link", "usr/data-link"})}
    assert layer_bytes(lower) == blob  # and back again, byte for byte
    for d in (upper, lower):
        os.chmod(d / "srv/ro", 0o755)


# -- write_flat_tar -----------------------------------------------------------------------------

def flat_bytes(*dirs_top_first: Path) -> bytes:
    buf = io.BytesIO()
    write_flat_tar([str(d) for d in dirs_top_first], buf)
    return buf.getvalue()


def test_write_flat_tar_keeps_xattrs_as_write_layer_does(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    (lower / "bin").mkdir(parents=True)
    (lower / "bin/tool").write_bytes(b"tool")
    upper.mkdir()
    (upper / "f").write_text("f")
    os.setxattr(upper / "f", "user.nbc", b"1")
    with tarfile.open(fileobj=io.BytesIO(flat_bytes(upper, lower))) as tf:
        assert tf.getmember("f").pax_headers["SCHILY.xattr.user.nbc"] == "1"
        assert sorted(tf.getnames()) == ["bin", "bin/tool", "f"]


def test_write_flat_tar_of_one_dir_is_its_layer(tmp_path: Path) -> None:
    _rich_upper(tmp_path)
    if os.geteuid() == 0:  # whiteouts and opaque dirs are where the two differ
        os.unlink(tmp_path / "gone")
        os.removexattr(tmp_path / "opaque", "trusted.overlay.opaque")
    os.chmod(tmp_path / "srv/ro", 0o755)
    assert flat_bytes(tmp_path) == layer_bytes(tmp_path)


def test_write_flat_tar_shows_the_top_copy_and_hides_xattr_whiteouts(tmp_path: Path) -> None:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    for d in (top, bottom):
        (d / "etc").mkdir(parents=True)
    (bottom / "etc/a").write_text("old")
    (bottom / "etc/gone").write_text("gone")
    (top / "etc/a").write_text("new")
    (top / "etc/gone").write_bytes(b"")
    os.setxattr(top / "etc/gone", "user.overlay.whiteout", b"")
    with tarfile.open(fileobj=io.BytesIO(flat_bytes(top, bottom))) as tf:
        assert tf.getnames() == ["etc", "etc/a"]
        assert tf.extractfile("etc/a").read() == b"new"  # type: ignore[union-attr]


@root_only
def test_write_flat_tar_drops_whiteouts_and_what_they_and_opaque_dirs_hide(tmp_path: Path) -> None:
    from nbcontainer.analysis.union import merged

    l0, l1, l2 = (tmp_path / n for n in ("l0", "l1", "l2"))
    for d, files in ((l0, ["etc/a", "etc/b", "data/x", "data/y", "f/inner"]),
                     (l1, ["etc/a", "data/z"]), (l2, ["etc/c", "f"])):
        for name in files:
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(f"{d.name}:{name}")
    os.mknod(l1 / "etc/b", stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(l1 / "data", "trusted.overlay.opaque", b"y")
    with tarfile.open(fileobj=io.BytesIO(flat_bytes(l2, l1, l0))) as tf:
        names = tf.getnames()
        assert tf.extractfile("etc/a").read() == b"l1:etc/a"  # type: ignore[union-attr]
        assert tf.getmember("data").pax_headers == {}
    assert names == ["data", "data/z", "etc", "etc/a", "etc/c", "f"]
    assert sorted(names) == sorted(p.lstrip("/") for p in merged([str(l0), str(l1), str(l2)]))


def test_diff_never_looks_through_a_lower_layers_symlink_onto_the_host(tmp_path: Path) -> None:
    from nbcontainer.layers import upper_changes

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    (lower / "a").symlink_to("/etc")  # an image's link to a host path
    (upper / "a").mkdir(parents=True)
    (upper / "a" / "passwd").write_text("mine\n")  # /etc/passwd exists on the host, not in the image
    rows = {r.path: r.kind for r in upper_changes(str(upper), [str(lower)])}
    assert rows["/a/passwd"] == "A"
