"""nbcontainer: learn, run and analyse Linux containers from a Jupyter notebook.

``%load_ext nbcontainer`` registers the magics; ``nbcontainer.Engine`` is the Python API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nbcontainer.errors import (
    AlreadyExistsError,
    DigestMismatchError,
    InvalidArgumentError,
    NbContainerError,
    NotFoundError,
    RegistryError,
    RuntimeSetupError,
    StateTransitionError,
    UnsafeArchiveError,
    UnsupportedHostError,
)

if TYPE_CHECKING:
    from nbcontainer.engine import Engine, default_root
    from nbcontainer.oci import Reference

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "DigestMismatchError",
    "Engine",
    "InvalidArgumentError",
    "NbContainerError",
    "NotFoundError",
    "Reference",
    "RegistryError",
    "RuntimeSetupError",
    "StateTransitionError",
    "UnsafeArchiveError",
    "UnsupportedHostError",
    "__version__",
    "default_root",
    "load_ipython_extension",
]


# The engine loads on first use: ``nbcontainer --help`` and ``import nbcontainer.errors`` need none of it.
_LAZY = {"Engine": "nbcontainer.engine", "default_root": "nbcontainer.engine", "Reference": "nbcontainer.oci"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbcontainer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbcontainer``: imported lazily so ``import nbcontainer`` stays light."""
    from nbcontainer.notebook.magics import load_ipython_extension as _load

    _load(ipython)
