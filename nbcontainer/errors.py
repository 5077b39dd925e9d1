"""The error tree of nbcontainer.

Every error the library raises on purpose derives from one base, so a face (CLI, magic) catches it
once and prints one line::

    NbContainerError
     +-- NotFoundError              an image, container, layer or blob that is not there
     +-- AlreadyExistsError         a name or tag already taken
     +-- InvalidArgumentError       a reference, flag or value that does not parse
     +-- DigestMismatchError        bytes that do not hash to the digest they claim
     +-- UnsafeArchiveError         an archive member that would escape its target
     +-- StateTransitionError       e.g. exec into a stopped container
     +-- RuntimeSetupError          a container setup step failed (step, errno)
     +-- RegistryError              a registry answered badly (status, url)
     +-- UnsupportedHostError       the host lacks a feature (fix says what to do)
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "AlreadyExistsError",
    "DigestMismatchError",
    "InvalidArgumentError",
    "NbContainerError",
    "NotFoundError",
    "RegistryError",
    "RuntimeSetupError",
    "StateTransitionError",
    "UnsafeArchiveError",
    "UnsupportedHostError",
]


class NbContainerError(Exception):
    """Base of every error nbcontainer raises on purpose; its message is one line."""


class NotFoundError(NbContainerError, LookupError):
    """An object that is not there: ``image 'ubuntu:latest' not found``."""


class AlreadyExistsError(NbContainerError):
    """A name or tag that is already in use."""


class InvalidArgumentError(NbContainerError, ValueError):
    """A value that does not parse or is not allowed."""


class DigestMismatchError(NbContainerError):
    """Content that does not match the digest or size it was announced with."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(NbContainerError):
    """An archive member that would be written outside its target directory."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(f"unsafe archive member {member!r}: {reason}")
        self.member = member
        self.reason = reason


class StateTransitionError(NbContainerError):
    """A lifecycle operation not allowed in the object's current state."""


class RuntimeSetupError(NbContainerError):
    """A step of the container setup failed; ``step`` names it, ``errno`` says why."""

    def __init__(self, step: str, errno: int = 0, detail: str = "") -> None:
        reason = os.strerror(errno) if errno else ""
        parts = [p for p in (detail, reason) if p]
        msg = f"container setup failed at {step!r}"
        if parts:
            msg += ": " + ": ".join(parts)
        super().__init__(msg)
        self.step = step
        self.errno = errno
        self.detail = detail
        self.errname = _errno.errorcode.get(errno, "")


class RegistryError(NbContainerError):
    """A registry request that failed; ``status`` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, *, status: int = 0, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class UnsupportedHostError(NbContainerError):
    """The host cannot do what was asked; ``fix`` says how to make it able."""

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(f"{message} ({fix})" if fix else message)
        self.fix = fix


def disk_full(err: OSError) -> str | None:
    """One line for a full disk or quota (``None`` for any other OS error): the faces print it
    instead of a traceback; the store's writes are atomic, so nothing half-written stays behind."""
    import errno

    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = f" (writing {err.filename})" if err.filename else ""
    return f"no space left on device{where}: free some space (nbcontainer prune, rmi, rm) and retry"
