"""Reading layer tars fast: a layer blob opened as its uncompressed tar, a small one-pass tar header
reader that yields ``tarfile.TarInfo`` objects at a fraction of ``tarfile``'s per-member cost, and
:func:`iter_layer` to look at a layer without extracting it. Decompression itself is
:mod:`nbcontainer.compression`'s.
"""

from __future__ import annotations

import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, cast

from nbcontainer.compression import CHUNK, Readable
from nbcontainer.compression import open_decompressed as open_stream
from nbcontainer.errors import InvalidArgumentError
from nbcontainer.layers.overlayfs import WHITEOUT_OPAQUE, WHITEOUT_PREFIX

__all__ = ["COMPRESSIONS", "KINDS", "NODE_TYPES", "XATTR_PAX_PREFIX", "LayerStats", "TarStream",
           "corrupt_layer", "iter_layer", "open_decompressed"]

COMPRESSIONS = ("none", "gzip", "zstd", "xz")
KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
         tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
         tarfile.CHRTYPE: "device", tarfile.BLKTYPE: "device", tarfile.FIFOTYPE: "fifo"}
NODE_TYPES = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO}
XATTR_PAX_PREFIX = "SCHILY.xattr."  # how GNU tar, Docker and tarfile carry xattrs in PAX records
_NO_DATA = frozenset((tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
                      tarfile.DIRTYPE, tarfile.FIFOTYPE))


@dataclass(frozen=True)
class LayerStats:
    """What one pass over a layer tar saw."""

    diff_id: str        # 'sha256:<hex>' of the uncompressed tar bytes
    size: int           # bytes of the uncompressed tar
    entries: int        # number of tar members, whiteouts included
    content_size: int   # sum of regular-file sizes


def corrupt_layer(detail: object) -> InvalidArgumentError:
    """The one-line error for a layer blob that is truncated or not a tar (or not its compression)."""
    return InvalidArgumentError(f"layer archive is truncated or corrupt: {detail}")


def open_decompressed(source: str | os.PathLike[str] | BinaryIO,
                      compression: str | None = None) -> BinaryIO:
    """Open a layer blob as its uncompressed tar stream.

    Parameters
    ----------
    source
        A path (opened here, closed with the stream) or a readable binary stream (left open; a
        pipe is fine: the magic bytes are read, not peeked).
    compression
        ``"gzip"``, ``"zstd"``, ``"xz"`` or ``"none"``; ``None`` sniffs the magic bytes. zstd uses
        the ``zstandard`` module when importable, else the ``zstd`` command.

    Returns
    -------
    BinaryIO
        A stream with ``read`` and ``close`` (a :class:`~nbcontainer.compression.Decompressed`);
        corrupt input raises :class:`InvalidArgumentError`.
    """
    if compression is not None and compression not in COMPRESSIONS:
        raise InvalidArgumentError(
            f"unknown layer compression {compression!r} (expected one of {', '.join(COMPRESSIONS)})")
    return cast(BinaryIO, open_stream(source, compression, formats=COMPRESSIONS[1:],
                                      corrupt=lambda _kind, err: corrupt_layer(err)))


# -- reading tar --------------------------------------------------------------------------------

_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s")


def _num(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0xFF else n
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _checksum_ok(h: bytes) -> bool:
    """Whether the stored checksum is the sum of the header's bytes, its own field as spaces."""
    stored, field = _num(h[148:156]), sum(h[148:156])
    # Summing 512 bytes in Python costs more than the rest of the header. adler32 gives the sum
    # modulo 65521 in one C call, and a header sums to at most 130560 < 2 * 65521.
    if stored + field - 256 - ((zlib.adler32(h) & 0xFFFF) - 1) in (0, 65521):
        return True
    unsigned = sum(h) - field + 256
    return stored in (unsigned, unsigned - 256 * sum(b > 127 for b in h))  # old tars sum signed bytes


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    records, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        end = pos + int(data[pos:space] if space > pos else b"x")
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if end <= space or end > len(data) or data[end - 1] != 0x0A or not eq:
            raise ValueError(f"invalid pax record {bytes(data[pos:pos + 40])!r}")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


class TarStream:
    """A one-pass tar reader for layers: ustar, GNU long names and PAX records; no sparse files.

    tarfile spends ~12 µs of Python on each header, about what GNU tar needs for a whole small
    file; this reader needs ~3 µs and still hands out ``tarfile.TarInfo`` objects.
    """

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self._buf, self._pos, self._read = memoryview(b""), 0, 0
        self._left = self._pad = 0  # data of the current member not consumed yet, its padding
        self._global: dict[str, str] = {}

    @property
    def offset(self) -> int:
        return self._read - len(self._buf) + self._pos

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available at the read position; False at end of stream."""
        have = len(self._buf) - self._pos
        parts = [self._buf[self._pos:]] if have else []
        while have < need:
            if not (chunk := self._stream.read(max(CHUNK, need - have))):
                return False
            self._read += len(chunk)
            parts.append(memoryview(chunk))
            have += len(chunk)
        self._buf, self._pos = (parts[0] if len(parts) == 1 else memoryview(b"".join(parts))), 0
        return True

    def _consume(self, n: int, fd: int | None = None) -> None:
        while n:
            if self._pos == len(self._buf) and not self._fill(1):
                raise tarfile.ReadError("unexpected end of data")
            end = min(len(self._buf), self._pos + n)
            if fd is not None:
                view = self._buf[self._pos:end]
                while view:
                    view = view[os.write(fd, view):]
            n -= end - self._pos
            self._pos = end

    def copy_data(self, fd: int | None) -> None:
        """Write the current member's data to ``fd`` (``None``: skip it)."""
        self._consume(self._left, fd)
        self._left = 0

    def _block(self, size: int) -> bytes:
        if len(self._buf) - self._pos < size and not self._fill(size):
            raise tarfile.ReadError(f"unexpected end of data at offset {self.offset}")
        self._pos += size
        return self._buf[self._pos - size:self._pos].tobytes()

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        pax: dict[str, str] = {}
        long: dict[bytes, bytes] = {}
        while True:
            self._consume(self._left + self._pad)
            self._left = self._pad = 0
            if len(self._buf) - self._pos < 512 and not self._fill(512):
                rest = len(self._buf) - self._pos
                raise tarfile.ReadError(f"truncated header at offset {self.offset}" if rest else
                                        f"no end-of-archive marker at offset {self.offset}")
            offset, header = self.offset, self._block(512)
            if header.count(0) == 512:
                return
            try:
                if not _checksum_ok(header):
                    raise ValueError("bad checksum")
                typ, size = header[156:157], _num(header[124:136])
                if typ in (b"x", b"g", b"L", b"K") and not 0 <= size <= 16 * CHUNK:
                    raise ValueError(f"extended header of {size} bytes")
                if typ in (b"x", b"g"):
                    (pax if typ == b"x" else self._global).update(_pax_records(
                        self._block(size + -size % 512)[:size]))
                    continue
                if typ in (b"L", b"K"):
                    long[typ] = self._block(size + -size % 512)[:size].split(b"\0", 1)[0]
                    continue
                member = self._member(header, typ, size, {**self._global, **pax}, long)
            except InvalidArgumentError:
                raise
            except ValueError as err:
                raise tarfile.ReadError(f"bad header at offset {offset}: {err}") from None
            pax, long = {}, {}
            if member.type not in _NO_DATA:
                self._left, self._pad = member.size, -member.size % 512
            yield member

    @staticmethod
    def _member(h: bytes, typ: bytes, size: int, pax: Mapping[str, str],
                long: dict[bytes, bytes]) -> tarfile.TarInfo:
        name, mode, uid, gid, _, mtime, _, _, link, magic, uname, gname, major, minor, prefix = (
            _HEADER.unpack_from(h))
        name = name.split(b"\0", 1)[0]
        if magic == b"ustar\x0000" and prefix[0]:  # POSIX ustar splits long names
            name = prefix.split(b"\0", 1)[0] + b"/" + name
        info = tarfile.TarInfo(long.get(b"L", name).decode("utf-8", "surrogateescape"))
        info.mode, info.uid, info.gid = _num(mode), _num(uid), _num(gid)
        info.size, info.mtime = size, _num(mtime)
        info.type, info.uname, info.gname = typ, _text(uname), _text(gname)
        info.linkname = long.get(b"K", link.split(b"\0", 1)[0]).decode("utf-8", "surrogateescape")
        if typ in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = _num(major), _num(minor)
        if pax:
            info.pax_headers = pax
            info.name = pax.get("path", info.name)
            info.linkname = pax.get("linkpath", info.linkname)
            info.uname, info.gname = pax.get("uname", info.uname), pax.get("gname", info.gname)
            info.size = int(pax.get("size", size))
            info.uid, info.gid = int(pax.get("uid", info.uid)), int(pax.get("gid", info.gid))
            info.mtime = float(pax["mtime"]) if "mtime" in pax else info.mtime
        if typ == tarfile.GNUTYPE_SPARSE or any(k.startswith("GNU.sparse.") for k in pax):
            raise InvalidArgumentError(f"layer member {info.name!r}: sparse files are not supported")
        if info.size < 0:
            raise ValueError(f"negative size {info.size}")
        if typ == tarfile.AREGTYPE and info.name.endswith("/"):
            info.type = tarfile.DIRTYPE
        if info.type == tarfile.DIRTYPE:
            info.name = info.name.rstrip("/")
        return info


def iter_layer(tar: str | os.PathLike[str] | BinaryIO, *,
               compression: str | None = None) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Yield ``(member, kind)`` for each entry of a layer, without extracting anything.

    ``kind`` is one of ``file dir symlink hardlink whiteout opaque device fifo``. Members are as
    stored, unfiltered, so a suspicious layer can be looked at before it is refused.

    Raises
    ------
    InvalidArgumentError
        The archive is truncated or corrupt.
    """
    with open_decompressed(tar, compression) as stream:
        try:
            for member in TarStream(stream):
                base = member.name.rpartition("/")[2]
                yield member, ("opaque" if base == WHITEOUT_OPAQUE else
                               "whiteout" if base.startswith(WHITEOUT_PREFIX) else
                               KINDS.get(member.type, "file"))
        except tarfile.TarError as err:
            raise corrupt_layer(err) from err
