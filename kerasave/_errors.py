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
when there is one. What Keras, TensorFlow, h5py, PyYAML, zipfile, json or the disk
raise becomes one of these where their code runs, through one context manager,
``with foreign_errors(path, what, at=...)``, and one table, ``FOREIGN`` (as httpx maps
httpcore's exceptions): callers never have to catch foreign types, and no other
module reads Keras' messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal, NamedTuple

from kerasave._runtime.public import public

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


# -- foreign errors --------------------------------------------------------------------

def first_line(exc: BaseException, *, typed: bool = False) -> str:
    """The first line of ``exc``'s message (``typed``: after its type's name, as a
    traceback ends); its type's name when the message is empty."""
    try:
        text = str(exc).strip()
    except Exception:  # (an exception whose __str__ raises says nothing)
        text = ""
    line = text.splitlines()[0].strip() if text else ""
    name = type(exc).__name__
    if not line:
        return name
    return f"{name}: {line}" if typed else line


def _said(exc: BaseException | str) -> list[str]:
    """What Keras said, in every error of ``exc``'s chain. Keras wraps the error of an
    inner object in its outer ones ("... Exception encountered: <the inner error>"),
    with configs in between that may hold any word: only the first line of each error,
    and the first line after each "Exception encountered:", are read."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | str | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        lines += [text.splitlines()[0] if text else ""]
        lines += [part.split("\n", 1)[0].strip()
                  for part in text.split("Exception encountered:")[1:]]
        current = (current.__cause__ or current.__context__
                   if isinstance(current, BaseException) else None)
    return lines


# How Keras' safe mode words its refusals (3.12 to 3.15): what it stops is
# UnsafeArtifactError from kerasave too, never CorruptArtifactError.
_REFUSED = re.compile(
    r"safe_mode|unsafe|\bLambda\b|TFSMLayer|not a modeling function|Non-modeling APIs"
    r"|not allowed during deserialization|not a KerasSaveable subclass"
    r"|enable_unsafe_deserialization")
# How Keras names a class or function it cannot find: "Could not locate class 'X'"
# (Keras 3), "Unknown layer: 'X'" (its legacy deserializer, which reads Keras 2 configs).
_UNKNOWN = re.compile(r"Could not locate \w+ '[^']*'|Unknown [\w ]+: '[^']*'")


def keras_refused(exc: BaseException | str) -> str | None:
    """The line in which Keras' own safe mode refused, or None."""
    return next((line for line in reversed(_said(exc)) if _REFUSED.search(line)), None)


def unknown_class(exc: BaseException | str) -> str | None:
    """Keras saying it does not know a class ("Could not locate class 'X'"), or None."""
    for line in _said(exc):
        found = _UNKNOWN.search(line)
        if found:
            return found.group(0)
    return None


Stage = Literal["read", "run", "config", "load", "assign", "write"]
"""Where foreign code runs.

- ``read``: a reader library parses a file's bytes (h5py, zipfile, json, yaml,
  protobuf, kerasave's own decoders): only the types that mean damage are mapped;
  any other is a bug, raised as it is.
- ``run``: TensorFlow or an interpreter runs on a file (its checkpoint reader,
  ``tf.saved_model.load``): any exception means the file is damaged.
- ``config``: Keras' deserializer builds a model from a config; its messages say
  more (a safe-mode refusal, a class it does not know). Only what the deserializer
  raises (TypeError, ValueError, KeyError, AttributeError) is mapped: TensorFlow's
  errors while a layer builds are raised as they are (a deferred build,
  ``_fastpaths.patches.build_deferred``, builds again on them).
- ``load``: Keras loads a whole model (config, values, compile settings): as
  ``config``, and any other exception means the file is damaged.
- ``assign``: saved values go into an existing model's variables.
- ``write``: Keras writes a model.
"""


class Foreign(NamedTuple):
    """One row of ``FOREIGN``."""

    at: tuple[Stage, ...]  # where the foreign code was running
    types: tuple[str, ...]  # "module:attribute" of each foreign type
    said: Callable[[BaseException], str | None] | None  # what in its message refines it
    error: type[KerasaveError] | None  # None: not kerasave's to map, raised as it is
    message: str  # format(what=, first=, whole=, said=, exc=)


_ANY = ("builtins:Exception",)
# The types readers raise for a damaged file: h5py (OSError, KeyError, RuntimeError,
# ValueError), zipfile, json and kerasave's decoders (ValueError), struct, protobuf,
# TensorFlow (OpError: NotFound, DataLoss, ...).
_DAMAGE = ("builtins:OSError", "builtins:ValueError", "builtins:LookupError",
           "builtins:RuntimeError", "builtins:EOFError", "builtins:ArithmeticError",
           "struct:error", "zipfile:BadZipFile", "zipfile:LargeZipFile", "yaml:YAMLError",
           "google.protobuf.message:DecodeError", "tensorflow:errors.OpError")
# What Keras' deserializer raises for a config it cannot build.
_DESERIALIZER = ("builtins:TypeError", "builtins:ValueError", "builtins:KeyError",
                 "builtins:AttributeError")
_UNKNOWN_CLASS = ("the config names a class this process does not know: {said}; "
                  "register it with keras.saving.register_keras_serializable() or pass "
                  "custom_objects")

FOREIGN: tuple[Foreign, ...] = (
    # Foreign(where, foreign types, refined by what it says, kerasave error, message)
    Foreign(("read",), ("yaml.constructor:ConstructorError",), None, UnsafeArtifactError,
            "refusing an unknown YAML tag: {exc.problem}"),  # (refuse rather than guess)
    Foreign(("read",), ("builtins:RecursionError",), None, CorruptArtifactError,
            "{what}: it nests too deeply"),
    Foreign(("read",), ("yaml:YAMLError",), None, CorruptArtifactError,
            "{what}: {whole}"),  # (where it is wrong is on its later lines)
    Foreign(("read",), _DAMAGE, None, CorruptArtifactError, "{what}: {first}"),
    Foreign(("config",), _DESERIALIZER, keras_refused, UnsafeArtifactError, "{said}"),
    Foreign(("config",), _DESERIALIZER, unknown_class, NotSerializableError, _UNKNOWN_CLASS),
    Foreign(("config",), _DESERIALIZER, None, CorruptArtifactError, "{what}: {first}"),
    Foreign(("load",), _ANY, keras_refused, UnsafeArtifactError, "{said}"),
    Foreign(("load",), _ANY, unknown_class, NotSerializableError, _UNKNOWN_CLASS),
    Foreign(("assign",), ("builtins:ValueError",), None, ArchitectureMismatchError,
            "{first}"),  # (Keras' word for a shape or a count that does not fit)
    Foreign(("run", "load", "assign"), _ANY, None, CorruptArtifactError, "{what}: {first}"),
    Foreign(("write",), ("builtins:OSError",), None, None, ""),  # (the disk, not the model)
    Foreign(("write",), _ANY, None, NotSerializableError, "{what}: {first}"),
)
"""What a foreign exception becomes, by where it was raised, its type and what its
message says; the first row that fits wins, and an exception no row fits is raised
as it is. Types are named by module and attribute and looked up only in modules
already imported (an exception of a module never imported cannot have been raised):
this module imports neither TensorFlow, Keras, h5py nor PyYAML."""


def _resolved(name: str) -> type[BaseException] | None:
    module, _, attribute = name.partition(":")
    found: object = sys.modules.get(module)
    for part in attribute.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def error_for(exc: BaseException, path: str | os.PathLike[str] | None, what: str, *,
              at: Stage = "read", typed: bool = False) -> KerasaveError | None:
    """kerasave's error for the foreign ``exc`` raised at ``at`` (``FOREIGN``), or None
    when it is not kerasave's to map. ``what``: what failed ("could not read the
    weights"); ``typed``: the type's name goes before its message."""
    if isinstance(exc, KerasaveError):
        return exc
    for row in FOREIGN:
        if at not in row.at:
            continue
        kinds = tuple(kind for kind in map(_resolved, row.types) if kind is not None)
        if not isinstance(exc, kinds):
            continue
        said = row.said(exc) if row.said is not None else ""
        if said is None:
            continue
        if row.error is None:
            return None
        message = row.message.format(
            what=what, first=first_line(exc, typed=typed), said=said, exc=exc,
            whole=" ".join(str(exc).split()) or type(exc).__name__)
        return row.error(message, path=path)
    return None


@contextlib.contextmanager
def foreign_errors(path: str | os.PathLike[str] | None, what: str, *, at: Stage = "read",
           typed: bool = False) -> Iterator[None]:
    """Foreign exceptions raised inside become kerasave's (``error_for``), raised
    ``from`` them; a kerasave error raised without a path is given ``path``.

    Example:
        >>> import json
        >>> try:
        ...     with foreign_errors("m.json", "not valid JSON"):
        ...         json.loads("[1,")
        ... except CorruptArtifactError as exc:
        ...     print(exc)
        not valid JSON: Expecting value: line 1 column 4 (char 3) (path: m.json)
    """
    try:
        yield
    except KerasaveError as exc:
        if exc.path is not None or path is None or type(exc).__init__ is not \
                KerasaveError.__init__:
            raise
        raise type(exc)(str(exc), path=path).with_traceback(exc.__traceback__) \
            from exc.__cause__
    except Exception as exc:
        error = error_for(exc, path, what, at=at, typed=typed)
        if error is None:
            raise
        try:  # (a RecursionError's thousand frames say nothing more)
            raise error from (None if isinstance(exc, RecursionError) else exc)
        finally:
            # error's traceback holds this frame, which holds error: without this, the
            # cycle keeps whatever the failed code held (a mapped file's pages, a
            # model's tensors) alive until the garbage collector runs
            del error
