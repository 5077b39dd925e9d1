"""Fixed-seed fuzzing of ``Engine.load`` and ``Engine.import_`` with mutated good inputs.

Oracle: each call succeeds or raises a one-line NbContainerError (or OSError with an errno);
nothing is written outside the store and the input dir; a failed call leaves no new image.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
from pathlib import Path

from nbcontainer.engine import Engine
from nbcontainer.errors import NbContainerError

SEED = 1234


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("bin", "etc", "usr", "usr/lib"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tf.addfile(ti)
        for name, data in (("etc/hostname", b"fuzz\n"), ("bin/sh", b"#!fake\n" * 20),
                           ("usr/lib/lib.so", bytes(range(256)))):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o755
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("bin/ash")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "sh"
        tf.addfile(ti)
    return buf.getvalue()


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            out.append((m, f.read() if f else None))
    return out


def _rebuild(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m, d in members:
            if d is not None:
                m.size = len(d)
                tf.addfile(m, io.BytesIO(d))
            else:
                tf.addfile(m)
    return buf.getvalue()


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _json_mutations(rng: random.Random, doc: object) -> str:
    """One mutated JSON text of ``doc``."""
    kind = rng.randrange(9)
    if kind == 7:
        return _deep(10_000)
    if kind == 8:
        return json.dumps({"created": 1e20, "architecture": "amd64", "os": "linux",
                           "rootfs": {"type": "layers", "diff_ids": []},
                           "history": [{"created_by": "x"}] * 12_000})

    def paths(o, pre=()):
        yield pre
        if isinstance(o, dict):
            for k, v in o.items():
                yield from paths(v, (*pre, k))
        elif isinstance(o, list):
            for i, v in enumerate(o):
                yield from paths(v, (*pre, i))

    doc = json.loads(json.dumps(doc))
    ps = [p for p in paths(doc) if p]
    if not ps:
        return json.dumps(rng.choice([1, None, [], "x" * 1_000_000]))
    p = rng.choice(ps)
    parent = doc
    for k in p[:-1]:
        parent = parent[k]
    old = parent[p[-1]]
    if kind == 0:
        new: object = 12345
    elif kind == 1:
        new = [old]
    elif kind == 2:
        new = None
    elif kind == 3:
        new = json.loads(_deep(5_000).replace("[]", "[1]", 1)) if False else "x" * 1_000_000
    elif kind == 4:
        new = ("sha256:" + "0" * 64) if isinstance(old, str) and old.startswith("sha256:") else "sha256:zz"
    elif kind == 5:
        new = old + 1 if isinstance(old, int) and not isinstance(old, bool) else -1
    else:
        new = {"created": 1e20} if isinstance(old, str) else 1e20
    parent[p[-1]] = new
    if kind == 6 and isinstance(doc, dict):
        doc["created"] = 1e20
        doc["history"] = [{"created_by": "x"}] * 12_000
    return json.dumps(doc)


def _evil_member(rng: random.Random) -> tarfile.TarInfo:
    kind = rng.randrange(7)
    names = ["../../pwned", "/tmp/pwned", "a/../../pwned", "x" * 300, "y/" * 100_000, "blobs/../../pwned"]
    ti = tarfile.TarInfo(names[rng.randrange(len(names))])
    if kind == 5:
        ti.type = tarfile.SYMTYPE
        ti.name = rng.choice(["blobs", "evil", "blobs/sha256", "manifest.json"])
        ti.linkname = rng.choice(["/tmp", "../../..", "/etc/passwd"])
    elif kind == 6:
        ti.type = tarfile.LNKTYPE
        ti.name = rng.choice(["evil", "manifest.json", "index.json"])
        ti.linkname = rng.choice(["/etc/passwd", "../../outside"])
    return ti


def _mutate(rng: random.Random, good: bytes) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        b = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 1:
        return good[:rng.randrange(len(good))]
    members = _members(good)
    if kind == 2:
        js = [i for i, (m, d) in enumerate(members) if d is not None and d[:1] in (b"{", b"[")]
        if js:
            i = rng.choice(js)
            m, d = members[i]
            assert d is not None
            members[i] = (m, _json_mutations(rng, json.loads(d)).encode())
            return _rebuild(members)
    ti = _evil_member(rng)
    payload = None if ti.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else b"pwned\n"
    if ti.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        members = [(m, d) for m, d in members if m.name != ti.name]
    pos = rng.randrange(len(members) + 1)
    members.insert(pos, (ti, payload))
    return _rebuild(members)


def _snapshot(d: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(d)), p.lstat().st_size) for p in d.rglob("*"))


def test_fuzz_load_and_import(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    src = tmp_path / "src"
    src.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("keep\n")
    before_sentinel = _snapshot(sentinel)

    rootfs = src / "rootfs.tar"
    rootfs.write_bytes(_rootfs_tar())
    builder = Engine(tmp_path / "builder")
    builder.import_(rootfs, "fz:base")
    goods: list[tuple[str, bytes]] = [("import", rootfs.read_bytes())]
    for fmt in ("docker+oci", "docker-archive", "oci-archive"):
        out = src / f"good-{fmt}.tar"
        builder.save(["fz:base"], out, format=fmt)
        goods.append(("load", out.read_bytes()))

    store = tmp_path / "store"
    engine = Engine(store)
    for kind, data in goods:  # good inputs must work
        p = src / "good.tar"
        p.write_bytes(data)
        if kind == "load":
            engine.load(p)
        else:
            engine.import_(p, "fz:1")

    cases = tracebacks = writes_outside = bad_images = 0
    failures: list[str] = []
    pwned = [Path("/tmp/pwned"), tmp_path / "pwned", tmp_path.parent / "pwned", store.parent / "outside"]
    for n in range(400):
        kind, good = goods[n % len(goods)]
        data = _mutate(rng, good)
        inp = src / f"case{n}.tar"
        inp.write_bytes(data)
        store_imgs = len(engine.images())
        cases += 1
        ok = True
        try:
            if kind == "load":
                engine.load(inp)
            else:
                engine.import_(inp, "fz:1")
        except NbContainerError as e:
            ok = False
            if "\n" in str(e):
                tracebacks += 1
                failures.append(f"case {n} {kind}: multi-line {type(e).__name__}: {str(e)[:200]!r}")
        except OSError as e:
            ok = False
            if e.errno is None or "\n" in str(e):
                tracebacks += 1
                failures.append(f"case {n} {kind}: OSError {str(e)[:200]!r}")
        except Exception as e:  # noqa: BLE001 - the oracle is "no other exception type"
            ok = False
            tracebacks += 1
            failures.append(f"case {n} {kind}: {type(e).__name__}: {str(e)[:200]!r}")
        if _snapshot(sentinel) != before_sentinel or any(os.path.lexists(p) for p in pwned):
            writes_outside += 1
            failures.append(f"case {n} {kind}: wrote outside")
            for p in pwned:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    p.unlink()
        try:
            after = len(engine.images())
        except Exception as e:  # noqa: BLE001
            bad_images += 1
            failures.append(f"case {n} {kind}: images() raised {type(e).__name__}: {e}")
            continue
        if not ok and after != store_imgs:
            bad_images += 1
            failures.append(f"case {n} {kind}: image count {store_imgs} -> {after} after failure")
        inp.unlink()
    try:
        engine.fsck(repair=True)
        left = engine.fsck()
    except Exception as e:  # noqa: BLE001
        left = [f"fsck raised {type(e).__name__}: {e}"]
    if left:
        bad_images += 1
        failures.append(f"fsck after repair: {left[:5]}")

    print(f"cases={cases} tracebacks={tracebacks} writes_outside={writes_outside} bad_images={bad_images}")
    for f in failures:
        print(f)
    assert (tracebacks, writes_outside, bad_images) == (0, 0, 0), failures[:20]
