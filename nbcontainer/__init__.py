"""nbcontainer: learn, run and analyse Linux containers from a Jupyter notebook.

``%load_ext nbcontainer`` registers the magics; ``nbcontainer.Engine`` is the Python API.
"""

from __future__ import annotations

from typing import Any

from nbcontainer.engine import Engine, default_root
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


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbcontainer``: imported lazily so ``import nbcontainer`` stays light."""
    from nbcontainer.notebook.magics import load_ipython_extension as _load

    _load(ipython)
