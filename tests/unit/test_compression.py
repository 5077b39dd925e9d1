"""nbcontainer.compression: the one sniff-and-decompress every reader uses."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from nbcontainer import compression
from nbcontainer.compression import open_decompressed, sniff_compression
from nbcontainer.errors import InvalidArgumentError

PAYLOAD = os.urandom(200_000) + b"layer" * 100_000


def _zstd(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    return zstandard.ZstdCompressor().compress(data)


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress, "zstd": _zstd, "xz": lzma.compress, "bzip2": bz2.compress, "": lambda d: d}


def read_all(stream: compression.Decompressed, size: int = 65536) -> bytes:
    out = b""
    while chunk := stream.read(size):
        out += chunk
    return out


class Pipe:
    """A non-seekable stream that gives at most 3 bytes a read, as a pipe may."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(min(size, 3) if size > 0 else 3)


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_each_format_round_trips_and_is_named(kind: str) -> None:
    blob = COMPRESS[kind](PAYLOAD)
    assert sniff_compression(blob[:6]) == kind
    with open_decompressed(io.BytesIO(blob)) as stream:
        assert stream.compression == kind
        assert read_all(stream) == PAYLOAD
    with open_decompressed(io.BytesIO(blob), kind) as stream:  # named rather than sniffed
        assert read_all(stream) == PAYLOAD


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2", ""])
def test_a_pipe_giving_short_reads_is_sniffed_right(kind: str) -> None:
    with open_decompressed(Pipe(COMPRESS[kind](PAYLOAD[:5000]))) as stream:  # type: ignore[arg-type]
        assert stream.compression == kind and read_all(stream) == PAYLOAD[:5000]


def test_a_path_is_opened_and_closed_with_the_stream(tmp_path: Path) -> None:
    (tmp_path / "blob.gz").write_bytes(gzip.compress(PAYLOAD))
    stream = open_decompressed(tmp_path / "blob.gz")
    assert read_all(stream) == PAYLOAD
    stream.close()
    assert stream.closed


def test_gzip_members_and_zstd_frames_are_read_across() -> None:
    blob = gzip.compress(b"one ") + gzip.compress(b"two")
    assert read_all(open_decompressed(io.BytesIO(blob))) == b"one two"
    blob = _zstd(b"one ") + _zstd(b"two")
    assert read_all(open_decompressed(io.BytesIO(blob))) == b"one two"


def test_unknown_magic_is_plain_and_replayed_whole() -> None:
    data = b"PK\x03\x04 not one of ours" * 10
    assert sniff_compression(data) == ""
    with open_decompressed(io.BytesIO(data)) as stream:
        assert stream.compression == "" and stream.read() == data


def test_a_format_the_caller_does_not_take_is_read_as_plain() -> None:
    blob = bz2.compress(PAYLOAD)
    assert sniff_compression(blob, ("gzip",)) == ""
    with open_decompressed(io.BytesIO(blob), formats=("gzip",)) as stream:
        assert stream.compression == "" and read_all(stream) == blob


def test_an_unknown_compression_name_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown compression 'lz4'"):
        open_decompressed(io.BytesIO(b""), "lz4")
    with pytest.raises(InvalidArgumentError, match="unknown compression 'bzip2'"):
        open_decompressed(io.BytesIO(b""), "bzip2", formats=("gzip",))


@pytest.mark.parametrize("kind", ["gzip", "zstd", "xz", "bzip2"])
def test_a_truncated_stream_raises_one_line_invalid_argument(kind: str) -> None:
    blob = COMPRESS[kind](os.urandom(300_000))
    with pytest.raises(InvalidArgumentError, match=f"^{kind} stream is truncated or corrupt: ") as info:
        read_all(open_decompressed(io.BytesIO(blob[: len(blob) // 2])))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["gzip", "xz", "bzip2"])
def test_corrupt_bytes_raise_the_callers_error(kind: str) -> None:
    blob = bytearray(COMPRESS[kind](PAYLOAD))
    blob[len(blob) // 2:len(blob) // 2 + 64] = bytes(64)
    seen: list[tuple[str, type[Exception]]] = []

    def corrupt(compression: str, err: Exception) -> Exception:
        seen.append((compression, type(err)))
        return InvalidArgumentError(f"my layer is bad ({compression})")

    with pytest.raises(InvalidArgumentError, match=rf"my layer is bad \({kind}\)"):
        read_all(open_decompressed(io.BytesIO(bytes(blob)), corrupt=corrupt))
    assert seen and seen[0][0] == kind


def test_errors_of_the_source_itself_pass_through() -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls == 1:
                return gzip.compress(PAYLOAD)[:100]
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error") as info:
        read_all(open_decompressed(Broken()))  # type: ignore[arg-type]
    assert not isinstance(info.value, InvalidArgumentError)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command")
def test_zstd_falls_back_to_the_zstd_command(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = subprocess.run(["zstd", "-c"], input=PAYLOAD, capture_output=True, check=True).stdout
    monkeypatch.setattr(compression, "zstandard", None)
    with open_decompressed(io.BytesIO(blob)) as stream:
        assert stream.compression == "zstd" and read_all(stream) == PAYLOAD
    with pytest.raises(InvalidArgumentError, match=r"^zstd stream is truncated or corrupt: zstd ex") as info:
        read_all(open_decompressed(io.BytesIO(blob[: len(blob) // 2])))
    assert "\n" not in str(info.value)
