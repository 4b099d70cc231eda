"""kerasave: save, restore and prove Keras 3 models in every classic TensorFlow format.

Every save is verified by a round trip; every load is all or nothing; nothing
is ever run from a file. See ``DESIGN.md`` for the contract.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kerasave._runtime.version import __version__

# The names below are imported on first use (PEP 562): ``import kerasave`` stays
# light, so the command line can quiet TensorFlow's import before it happens.
_WHERE = {name: module for module, names in {
    "kerasave.formats.configtext": ("model_from_json", "model_from_yaml", "to_json", "to_yaml"),
    "kerasave._errors": (
        "ArchitectureMismatchError", "ArtifactNotFoundError", "CorruptArtifactError",
        "KerasaveError", "NotSerializableError", "RoundTripError", "UnknownFormatError",
        "UnsafeArtifactError"),
    "kerasave._api": ("Artifact", "inspect", "load_config", "load_model", "load_weights",
                         "open", "save_config", "save_model", "save_weights", "verify"),
    "kerasave.checkpoints.manager": ("CheckpointManager",),
    "kerasave._runtime.reference": ("reference_data", "reference_model"),
    "kerasave._report": ("Check", "Inspection", "Report", "Variable"),
}.items() for name in names}
_SUBMODULES = {"callbacks", "testing", "formats", "cli"}
# What imports neither TensorFlow nor Keras: these modules, and reading without a model.
_LIGHT = {"kerasave._errors", "kerasave._report"}
_LIGHT_NAMES = {"open", "Artifact", "inspect"}


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULES and name not in _WHERE:
        raise AttributeError(f"module 'kerasave' has no attribute {name!r}")
    if _WHERE.get(name) not in _LIGHT and name not in _LIGHT_NAMES:
        from kerasave._runtime.quiet import import_tensorflow

        import_tensorflow()  # (TensorFlow's load ignores a TF_CPP_MIN_LOG_LEVEL set to hide it)
    if name in _SUBMODULES:
        return importlib.import_module(f"kerasave.{name}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE) | _SUBMODULES)


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from kerasave import callbacks  # noqa: F401
    from kerasave._api import (
        Artifact,
        inspect,
        load_config,
        load_model,
        load_weights,
        open,
        save_config,
        save_model,
        save_weights,
        verify,
    )
    from kerasave._errors import (
        ArchitectureMismatchError,
        ArtifactNotFoundError,
        CorruptArtifactError,
        KerasaveError,
        NotSerializableError,
        RoundTripError,
        UnknownFormatError,
        UnsafeArtifactError,
    )
    from kerasave._report import Check, Inspection, Report, Variable
    from kerasave._runtime.reference import reference_data, reference_model
    from kerasave.checkpoints.manager import CheckpointManager
    from kerasave.formats.configtext import model_from_json, model_from_yaml, to_json, to_yaml

__all__ = [
    "__version__",
    # the reference model
    "reference_model",
    "reference_data",
    # weights
    "save_weights",
    "load_weights",
    # configs
    "to_json",
    "model_from_json",
    "to_yaml",
    "model_from_yaml",
    "save_config",
    "load_config",
    # whole models
    "save_model",
    "load_model",
    # training checkpoints
    "CheckpointManager",
    # checking and looking
    "verify",
    "inspect",
    # reading without a model
    "open",
    "Artifact",
    # results
    "Report",
    "Check",
    "Inspection",
    "Variable",
    # errors
    "KerasaveError",
    "UnknownFormatError",
    "ArtifactNotFoundError",
    "CorruptArtifactError",
    "ArchitectureMismatchError",
    "UnsafeArtifactError",
    "NotSerializableError",
    "RoundTripError",
]
