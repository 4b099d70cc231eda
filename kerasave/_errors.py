"""Errors raised by kerasave.

The tree::

    KerasaveError
    ├── UnknownFormatError         (also ValueError)
    ├── ArtifactNotFoundError      (also FileNotFoundError)
    ├── CorruptArtifactError
    ├── ArchitectureMismatchError  (also ValueError)
    ├── UnsafeArtifactError
    ├── NotSerializableError
    └── RoundTripError             (.report says which check failed)

Every message says what was expected and what was received, and names the path
when there is one. Errors from Keras, TensorFlow, h5py or PyYAML are mapped to
these with ``raise ... from exc`` so callers never have to catch foreign types.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kerasave._public import public

if TYPE_CHECKING:
    from kerasave._report import Report

__all__ = [
    "KerasaveError",
    "UnknownFormatError",
    "ArtifactNotFoundError",
    "CorruptArtifactError",
    "ArchitectureMismatchError",
    "UnsafeArtifactError",
    "NotSerializableError",
    "RoundTripError",
]


class KerasaveError(Exception):
    """Base class of every error kerasave raises on purpose."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        if self.path is not None and self.path not in message:
            message = f"{message} (path: {self.path})"
        super().__init__(message)


class UnknownFormatError(KerasaveError, ValueError):
    """No format fits the name or the path's suffix."""


class ArtifactNotFoundError(KerasaveError, FileNotFoundError):
    """Nothing is at the path."""


class CorruptArtifactError(KerasaveError):
    """The artifact is truncated, unreadable, or does not match its checksums."""


class ArchitectureMismatchError(KerasaveError, ValueError):
    """The saved variables do not fit the model."""


class UnsafeArtifactError(KerasaveError):
    """Loading the artifact would run code from it."""


class NotSerializableError(KerasaveError):
    """The model has no config that could rebuild it (e.g. subclassed, no get_config)."""


class RoundTripError(KerasaveError):
    """Verification after a save failed; ``.report`` holds every check."""

    def __init__(self, report: Report) -> None:
        self.report = report
        failed = [c for c in report.checks if not c.ok]
        lines = "; ".join(f"{c.name}: {c.detail}" for c in failed) or "no check passed"
        super().__init__(
            f"round trip of the {report.format!r} artifact failed: {lines}", path=report.path
        )


public(ArchitectureMismatchError, ArtifactNotFoundError, CorruptArtifactError, KerasaveError,
       NotSerializableError, RoundTripError, UnknownFormatError, UnsafeArtifactError)
