"""A CLI verb imports only what it uses: listing, inspecting and ``--help`` load no heavy library.

Each case runs in a fresh interpreter (this one has imported everything already) on an empty store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("pandas", "httpx", "pyroute2", "ipywidgets", "matplotlib", "IPython", "tqdm", "zstandard",
         "pyseccomp")

_PROBE = f"""
import contextlib, io, json, sys
import nbcontainer.cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = nbcontainer.cli.main(sys.argv[1:])
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r})
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def _start(root, *argv: str) -> dict:
    """Exit code and heavy modules of ``nbcontainer --root ROOT ARGV…`` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, "--root", str(root), *argv],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# Without root, ps says that containers need root (exit 1); inspect of a missing name exits 1 either way.
_PS = 0 if os.geteuid() == 0 else 1


@pytest.mark.parametrize(("argv", "exit_code"), [
    (["--help"], 0),
    (["ps"], _PS),
    (["ps", "-a"], _PS),
    (["images"], 0),
    (["inspect", "busybox"], 1),  # not found in an empty store: the error path imports nothing heavy either
], ids=["help", "ps", "ps-a", "images", "inspect"])
def test_listing_verbs_and_help_import_no_heavy_library(tmp_path, argv, exit_code):
    started = _start(tmp_path / "store", *argv)
    assert started == {"code": exit_code, "heavy": []}
