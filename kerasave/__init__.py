"""kerasave: save, restore and prove Keras 3 models in every classic TensorFlow format.

Every save is verified by a round trip; every load is all or nothing; nothing
is ever run from a file. See ``DESIGN.md`` for the contract.
"""

from __future__ import annotations

from kerasave import callbacks  # noqa: F401  (kerasave.callbacks.Checkpoint)
from kerasave._config import model_from_json, model_from_yaml, to_json, to_yaml
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
from kerasave._facade import (
    inspect,
    load_config,
    load_model,
    load_weights,
    save_config,
    save_model,
    save_weights,
    verify,
)
from kerasave._manager import CheckpointManager
from kerasave._reference import reference_data, reference_model
from kerasave._report import Check, Inspection, Report, Variable
from kerasave._version import __version__

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
