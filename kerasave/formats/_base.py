"""What every format handler provides.

A handler knows one format and nothing else: how to write it, read it, what it
holds and how to compare it with a model. Paths, temporary siblings, renaming
into place and error mapping belong to the facade (``kerasave._api``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kerasave._errors import ArchitectureMismatchError, NotSerializableError, first_line
from kerasave._fastpaths.compiling import mend_compile_settings
from kerasave._report import Check, Variable
from kerasave._runtime.lazy import keras
from kerasave.compare.verify import serialized_config

__all__ = [
    "Handler",
    "WeightsFormat",
    "ConfigFormat",
    "ModelFormat",
    "Contents",
    "ReadArray",
    "no_arrays",
    "require_config",
    "versions_now",
    "require_built",
    "require_model",
    "build_if_needed",
    "mend_compile_config",
    "passed",
]


@dataclass(frozen=True)
class Contents:
    """What ``Handler.contents`` reads from an artifact."""

    variables: tuple[Variable, ...] = ()
    has_optimizer: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    # Which of ``variables`` (by name) are optimizer state, and how many optimizer
    # variables the writer recorded it saved (None: it recorded nothing).
    optimizer_variables: tuple[str, ...] = ()
    recorded_optimizer_variables: int | None = None


StoredArrays = Iterator[tuple[str, np.ndarray]]  # what ``arrays`` yields
ReadArray = Callable[[str], np.ndarray]  # what ``reader`` gives: one array, by name


class Handler:
    """What every format handler provides, whatever its kind.

    A handler is one of ``WeightsFormat``, ``ConfigFormat`` or ``ModelFormat``,
    which add ``load``. ``arrays`` yields every array stored in the artifact, read
    from disk, by the names ``contents`` (and so ``kerasave.inspect``) lists,
    with their exact dtype, shape and bytes; damage found while reading raises a
    ``KerasaveError`` naming the path. No handler method checks the integrity
    manifest: the caller resolves which version of an artifact to read first
    (``kerasave.store.transaction.resolve_checked``), and says whether every byte of it
    matched its CRC32C (``checksummed``).
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # "weights", "config" or "model"
    suffixes: ClassVar[tuple[str, ...]] = ()
    # A temporary artifact's name must end in this for the writer to accept it.
    temp_suffix: ClassVar[str] = ""
    # Whether the integrity manifest lives inside the artifact (a directory) or beside it.
    manifest_inside: ClassVar[bool] = False
    # What the artifact is, in words ("weights only", "whole model", ...).
    description: ClassVar[str] = ""
    # It holds an architecture a model can be built from (a config, a whole model).
    holds_architecture: ClassVar[bool] = False
    # It can hold optimizer state.
    can_hold_optimizer: ClassVar[bool] = False
    # Verifying a save reads the model's config back: a config that would run code
    # when read is refused before anything is written.
    verifiable_config: ClassVar[bool] = False
    # What names ``arrays`` (and ``contents``) give, in words: two artifacts of one
    # format name the same variables alike.
    array_names: ClassVar[str] = ""

    def members(self, path: Path) -> list[Path]:
        """The files (or directory) that make up the artifact at ``path``, if any.

        The integrity manifest beside a file comes first: renamed into place before
        the file it describes (see ``kerasave.store.transaction``).
        """
        sidecar = path.with_name(path.name + ".kerasave.json")
        return [p for p in (sidecar, path) if p.exists()]

    def exists(self, path: Path) -> bool:
        return path.is_file()

    def member_tail(self, path: Path, member: Path) -> str:
        """How the manifest names ``member`` of the artifact at ``path``: what follows
        the artifact's name in the member's (``"."``: the file itself), the same for
        the artifact, its temporary and its backup (``kerasave.store``)."""
        return member.name[len(path.name):] or "."

    def member_at(self, path: Path, tail: str) -> Path:
        """The member of the artifact at ``path`` that ``member_tail`` names ``tail``."""
        return path if tail == "." else path.with_name(path.name + tail)

    def sniff(self, path: Path) -> bool:
        """Whether the existing artifact at ``path`` is of this format (by content)."""
        return False

    def preflight(self, model: keras.Model, path: Path) -> None:
        """Refuse, before anything is written, a model this format cannot hold."""
        require_built(model, path)

    def write(self, model: keras.Model, path: Path) -> None:
        raise NotImplementedError

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        """Compare the artifact at ``path`` with ``model``, bit for bit.

        ``own=True``: ``path`` is kerasave's own temporary, written by this process
        just now (a save verifying itself), so it may be memory-mapped and the
        safety walks meant for foreign files may be skipped. ``verify()`` of a
        user's file passes ``own=False``: careful reads, every check.
        """
        raise NotImplementedError

    def contents(self, path: Path) -> Contents:
        raise NotImplementedError

    def arrays(self, path: Path) -> StoredArrays:
        raise NotImplementedError

    def reader(self, path: Path) -> contextlib.AbstractContextManager[ReadArray]:
        """One stored array at a time, by the names ``arrays`` gives (``kerasave.open``).

        Entering reads and checks the artifact's structure once, as ``arrays`` does
        before its first array (the same safety walks and declared sizes); the
        function it gives then reads only the array asked for, and raises
        ``KeyError`` for a name the artifact does not hold. Leaving closes what
        entering opened. This default scans ``arrays`` up to the name: a format
        that holds arrays reads one without the others by overriding it.
        """
        return _scanning(self, path)

    def description_at(self, path: Path) -> str:
        """``description``, for the artifact at ``path``."""
        return self.description

    def left_out(self, path: Path) -> dict[str, str]:
        """Stored arrays (by ``arrays``' names) a load leaves out on purpose, with why:
        none, but for a Keras 2 SavedModel's metric totals and hyperparameters."""
        return {}


@contextlib.contextmanager
def _scanning(handler: Handler, path: Path) -> Iterator[ReadArray]:
    def read(name: str) -> np.ndarray:
        for found, value in handler.arrays(path):
            if found == name:
                return value
        raise KeyError(name)

    yield read


@contextlib.contextmanager
def no_arrays() -> Iterator[ReadArray]:
    """The reader of an artifact that holds no arrays (an architecture)."""
    def read(name: str) -> np.ndarray:
        raise KeyError(name)

    yield read


class WeightsFormat(Handler):
    """Variables (and optimizer state) only, read into a model the caller built."""

    kind = "weights"
    description = "weights only"

    def load(self, model: keras.Model, path: Path, *,
             checksummed: bool = False) -> list[Check]:
        """Restore the artifact's values into ``model``, all or nothing."""
        raise NotImplementedError


class ConfigFormat(Handler):
    """An architecture only, read as a fresh, uncompiled model."""

    kind = "config"
    description = "architecture only"
    holds_architecture = True
    verifiable_config = True

    def load(self, path: Path, *, custom_objects: Mapping[str, Any] | None = None,
             safe_mode: bool = True) -> keras.Model:
        raise NotImplementedError


class ModelFormat(Handler):
    """A whole model (``holds_architecture``), or a serving export."""

    kind = "model"

    def load(self, path: Path, *, compile: bool = True, safe_mode: bool = True,
             custom_objects: Mapping[str, Any] | None = None,
             checksummed: bool = False, mmap: bool = False) -> Any:
        """What the artifact holds: a compiled Keras model, or the restored serving object.

        ``mmap``: the variables' memory is the file's pages, mapped copy-on-write
        (``.keras`` and legacy ``.h5``; the others refuse it).
        """
        raise NotImplementedError

    def whole_at(self, path: Path) -> bool:
        """Whether the artifact at ``path`` loads as a Keras model (weights with their
        architecture): every artifact of a format that ``holds_architecture``, and
        a Keras 2 SavedModel among serving exports."""
        return self.holds_architecture


def passed(checks: list[Check]) -> bool:
    """Whether a verification passed (``attempt``'s ``ok`` for a check's fast path)."""
    return all(c.ok for c in checks)


def mend_compile_config(model: keras.Model) -> None:
    """Put back the optimizer Keras' legacy HDF5 writer pops from a model's compile
    config (``model.save("x.h5")`` does it to the caller's model): see
    ``kerasave._fastpaths.compiling.mend_compile_settings``."""
    mend_compile_settings(model)


def require_model(model: Any, path: Path) -> None:
    if not isinstance(model, keras.Model):
        raise NotSerializableError(
            f"expected a keras.Model, received {type(model).__name__}", path=path
        )


def require_built(model: keras.Model, path: Path) -> None:
    require_model(model, path)
    if not model.built:
        raise NotSerializableError(
            "the model is not built, so it has no variables to save; call it on data or "
            "build() it first",
            path=path,
        )


def require_config(model: keras.Model, path: Path | None = None) -> dict[str, Any]:
    """The model's config, or NotSerializableError when it has none that rebuilds it.

    Keras 3 writes a config for a subclassed model that does not define
    ``get_config`` when it can (its constructor's arguments, recorded when it was
    made: ``Operation.get_config``); it raises ``NotImplementedError`` when it cannot.
    Whether the config really rebuilds the model is for the save's round trip to say.
    """
    _require_registered(model, path)
    try:
        return serialized_config(model)
    except NotImplementedError as exc:
        raise NotSerializableError(
            f"{type(model).__name__} has no config Keras can write (it defines no "
            "get_config(), and Keras could not record its constructor's arguments), so its "
            "architecture cannot be saved as a config; save its weights instead "
            "(save_weights), or implement get_config() and register the class with "
            "keras.saving.register_keras_serializable()",
            path=path,
        ) from exc
    except (TypeError, ValueError) as exc:
        raise NotSerializableError(
            f"{type(model).__name__}.get_config() failed, so its architecture cannot be "
            f"saved: {exc}",
            path=path,
        ) from exc


def _require_registered(model: keras.Model, path: Path | None) -> None:
    """NotSerializableError when the model's own class is one no load could find:
    Keras writes its name, but only a registered class (or one in the
    ``custom_object_scope`` the save runs in) can be rebuilt from it."""
    cls = type(model)
    if cls.__module__.split(".")[0] == "keras":
        return
    name = keras.saving.get_registered_name(cls)
    if keras.saving.get_registered_object(name) is cls:
        return
    raise NotSerializableError(
        f"{cls.__name__} is a subclassed model that is not registered: Keras would write "
        "its config, but no load can rebuild the model from it without the class; register "
        "it with keras.saving.register_keras_serializable() (or save inside "
        "keras.saving.custom_object_scope), or save its weights instead (save_weights)",
        path=path)


def versions_now() -> dict[str, str]:
    """The versions of the libraries that write an artifact now."""
    from kerasave._runtime.lazy import tf
    from kerasave._runtime.version import __version__

    return {"kerasave": __version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _tuplify(value: Any) -> Any:
    """JSON lists back to the tuples Keras build configs hold."""
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuplify(v) for k, v in value.items()}
    return value


def build_if_needed(model: keras.Model, build: dict[str, Any] | None, path: Path) -> list[Check]:
    """Build an unbuilt model from the build shapes an artifact recorded."""
    if model.built:
        return []
    if not build:
        raise ArchitectureMismatchError(
            "the model is not built and the artifact records no build shapes (it was not "
            "written by kerasave); build the model first, e.g. by calling it on one batch",
            path=path,
        )
    try:
        model.build_from_config(_tuplify(build))
    except Exception as exc:
        raise ArchitectureMismatchError(
            f"could not build the model from the saved shapes {build}: {first_line(exc)}",
            path=path
        ) from exc
    if not model.built:
        if not model.variables:
            raise ArchitectureMismatchError(
                f"the model did not build from the saved shapes {build}", path=path
            )
        # Keras ran call() symbolically and created every variable, but leaves a
        # subclassed model flagged unbuilt, which its own weight loader refuses.
        model.built = True
    return [Check("build", True, f"built the model from saved shapes {build}")]
