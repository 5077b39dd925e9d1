"""One sniff-and-decompress for every reader: layer blobs, archive members, whole archives, pulls.

:func:`sniff_compression` names a stream's compression from its first bytes; :func:`open_decompressed`
opens a path or a stream (a pipe is fine: the magic bytes are read, not peeked) as its uncompressed
bytes. gzip (several members), zstd (several frames; the ``zstandard`` module, else the ``zstd``
command), xz and bzip2 are known; anything else is read as it is.

A corrupt or truncated stream raises one exception from ``read``, built by the caller's ``corrupt``
function from the compression and the decompressor's error, so each caller keeps its own message.
Errors of the underlying stream that are not about its bytes (an ``OSError`` with an errno) pass
through unchanged.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import subprocess
import threading
import zlib
from collections.abc import Callable, Collection
from typing import BinaryIO, Protocol, Self, cast

from nbcontainer.errors import InvalidArgumentError, UnsupportedHostError

__all__ = ["CHUNK", "FORMATS", "Decompressed", "Readable", "open_decompressed", "sniff_compression"]

CHUNK = 1 << 20
FORMATS = ("gzip", "zstd", "xz", "bzip2")
_PLAIN = ("", "none")  # both spell "not compressed"

_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz", b"BZh": "bzip2"}
_HEAD = max(map(len, _MAGIC))

try:
    import zstandard
except ImportError:  # the zstd command is the fallback
    zstandard = None  # type: ignore[assignment]


class Readable(Protocol):
    """What is read from: a file, a pipe, an HTTP body, another reader."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Stream(Readable, Protocol):
    def close(self) -> None: ...


class _ZstdExit(Exception):
    """The ``zstd`` command refused its input, or the input ended inside a zstd frame."""


def _is_corrupt(err: BaseException) -> bool:
    """Whether ``err`` is a decompressor's verdict on the bytes rather than a failure of the source."""
    if isinstance(err, (EOFError, zlib.error, lzma.LZMAError, _ZstdExit)):
        return True
    if zstandard is not None and isinstance(err, zstandard.ZstdError):
        return True
    # gzip's BadGzipFile and bz2's "Invalid data stream" are OSErrors without an errno
    return isinstance(err, OSError) and err.errno is None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _default_corrupt(compression: str, err: Exception) -> Exception:
    return InvalidArgumentError(f"{compression or 'plain'} stream is truncated or corrupt: {_one_line(err)}")


def sniff_compression(head: bytes, formats: Collection[str] = FORMATS) -> str:
    """``gzip``, ``zstd``, ``xz`` or ``bzip2`` (those of ``formats``) from the first bytes of a stream,
    else ``""`` (plain)."""
    return next((name for magic, name in _MAGIC.items() if name in formats and head.startswith(magic)), "")


class Decompressed:
    """``read()`` over a decompressor: replays the sniffed ``head``, maps corrupt input, closes owners.

    ``compression`` is what was read: a name of :data:`FORMATS`, or ``""`` for a plain stream.
    """

    def __init__(self, read: Callable[[int], bytes], closers: list[Callable[[], object]], *,
                 compression: str = "", head: bytes = b"",
                 corrupt: Callable[[str, Exception], Exception] = _default_corrupt) -> None:
        self.compression, self.closed = compression, False
        self._read, self._closers, self._head, self._corrupt = read, closers, head, corrupt

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        try:
            if self._head:
                data, self._head = (self._head + self._read(-1), b"") if size < 0 else (
                    self._head[:size], self._head[size:])
                return data
            return self._read(size)
        except Exception as err:
            if _is_corrupt(err):
                raise self._corrupt(self.compression, err) from err
            raise

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for close in self._closers:
                close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ZstdFrames:
    """Passes zstd bytes through and follows their frame and block headers, so that an end of input
    inside a frame is seen: the zstandard module's reader then just stops, as if all were there."""

    _ZSTD, _SKIPPABLE = b"\x28\xb5\x2f\xfd", 0x184D2A50

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._state, self._want, self._buf, self._skip = "magic", 4, b"", 0
        self._checksum = False

    @property
    def between_frames(self) -> bool:
        """Whether what was read so far ends where a frame ends (or could not be followed)."""
        return self._state == "lost" or (self._state == "magic" and not self._buf and not self._skip)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        pos = 0
        while pos < len(data) and self._state != "lost":
            if self._skip:
                n = min(self._skip, len(data) - pos)
                self._skip -= n
                pos += n
                continue
            take = min(self._want - len(self._buf), len(data) - pos)
            self._buf += data[pos:pos + take]
            pos += take
            if len(self._buf) == self._want:
                self._header(self._buf)
                self._buf = b""
        return data

    def _header(self, h: bytes) -> None:
        """One header complete; what follows it (RFC 8878 section 3.1)."""
        if self._state == "magic":
            magic = int.from_bytes(h, "little")
            if h == self._ZSTD:
                self._state, self._want = "frame", 1
            elif magic & 0xFFFFFFF0 == self._SKIPPABLE:
                self._state, self._want = "skippable", 4
            else:
                self._state = "lost"  # not zstd: the decompressor says so
        elif self._state == "frame":
            fhd = h[0]
            fcs, single, did = fhd >> 6, (fhd >> 5) & 1, fhd & 3
            self._checksum = bool(fhd & 4)
            self._skip = (not single) + (0, 1, 2, 4)[did] + ((single, 2, 4, 8)[fcs])
            self._state, self._want = "block", 3
        elif self._state == "block":
            header = int.from_bytes(h, "little")
            kind, size = (header >> 1) & 3, header >> 3
            self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
            if header & 1:  # the last block of the frame
                self._skip += 4 * self._checksum
                self._state, self._want = "magic", 4
        else:  # skippable frame: its size
            self._skip = int.from_bytes(h, "little")
            self._state, self._want = "magic", 4


class _ZstdModule:
    """The zstandard module's reader, raising when the input ends inside a frame."""

    def __init__(self, raw: Readable) -> None:
        self._frames = _ZstdFrames(raw)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            cast(BinaryIO, self._frames), read_size=CHUNK, read_across_frames=True, closefd=False)

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        if not data and size and not self._frames.between_frames:
            raise _ZstdExit("zstd data ends inside a frame")
        return data

    def close(self) -> None:
        self._reader.close()


class _ZstdProcess:
    """``zstd -dc`` fed by a thread, for hosts without the zstandard module."""

    def __init__(self, raw: Readable) -> None:
        if (exe := shutil.which("zstd")) is None:
            raise UnsupportedHostError("cannot decompress a zstd stream",
                                       fix="pip install zstandard, or install the zstd command")
        self._proc = proc = subprocess.Popen([exe, "-dcq"], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._stdout, self._stderr = proc.stdout, proc.stderr
        self._feeder = threading.Thread(target=self._feed, args=(raw, proc.stdin), daemon=True)
        self._feeder.start()

    @staticmethod
    def _feed(raw: Readable, stdin: BinaryIO) -> None:
        try:
            while chunk := raw.read(CHUNK):
                stdin.write(chunk)
        except (BrokenPipeError, ValueError):
            pass  # zstd stopped reading; read() reports its exit status
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def read(self, size: int = -1) -> bytes:
        data = self._stdout.read(size)
        if not data and self._proc.wait() != 0:
            msg = self._stderr.read().decode(errors="replace")
            raise _ZstdExit(f"zstd exited with status {self._proc.returncode}: {' '.join(msg.split())}")
        return data

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._feeder.join()
        self._stdout.close()
        self._stderr.close()


def open_decompressed(source: str | os.PathLike[str] | Readable, compression: str | None = None, *,
                      formats: Collection[str] = FORMATS,
                      corrupt: Callable[[str, Exception], Exception] = _default_corrupt) -> Decompressed:
    """Open a path or a binary stream as its uncompressed bytes.

    Parameters
    ----------
    source
        A path (opened here, closed with the result) or a readable binary stream (left open).
    compression
        One of ``formats``, or ``""``/``"none"`` for plain; ``None`` sniffs the magic bytes.
    formats
        The compressions this caller accepts; a stream with another one's magic is read as plain.
    corrupt
        Builds the exception ``read`` raises for corrupt or truncated input from the compression
        (``""`` when plain) and the decompressor's error. By default an :class:`InvalidArgumentError`.

    Returns
    -------
    Decompressed
        With ``read``, ``close`` and ``compression`` (``""`` for plain); a context manager.

    Raises
    ------
    InvalidArgumentError
        ``compression`` names a compression that is not one of ``formats``.
    UnsupportedHostError
        A zstd stream, and neither the zstandard module nor the ``zstd`` command is here.
    """
    if compression is not None and compression not in _PLAIN and compression not in formats:
        raise InvalidArgumentError(
            f"unknown compression {compression!r} (expected one of none, {', '.join(formats)})")
    closers: list[Callable[[], object]] = []
    raw: Readable
    if isinstance(source, (str, os.PathLike)):
        file = open(source, "rb", buffering=CHUNK)  # noqa: SIM115 - the result owns it
        closers.append(file.close)
        raw = file
    else:
        raw = source
    try:
        head = b""
        while len(head) < _HEAD and (more := raw.read(_HEAD - len(head))):  # a pipe may give less
            head += more
        kind = sniff_compression(head, formats) if compression is None else compression
        kind = "" if kind in _PLAIN else kind
        if not kind:
            return Decompressed(raw.read, closers, head=head, corrupt=corrupt)
        src = cast(BinaryIO, Decompressed(raw.read, [], compression=kind, head=head, corrupt=corrupt))
        stream: _Stream
        if kind == "gzip":
            stream = gzip.GzipFile(fileobj=src, mode="rb")
        elif kind == "xz":
            stream = lzma.LZMAFile(src)  # noqa: SIM115 - the result closes it
        elif kind == "bzip2":
            stream = bz2.BZ2File(src)
        elif zstandard is not None:
            stream = _ZstdModule(src)
        else:
            stream = _ZstdProcess(src)
    except BaseException:
        for close in closers:
            close()
        raise
    return Decompressed(stream.read, [stream.close, *closers], compression=kind, corrupt=corrupt)
