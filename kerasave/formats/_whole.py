"""What the two whole-model formats (``.keras``, legacy ``.h5``) share: how a failed
load is told apart (damage, code, an unknown class) and how a save is verified,
by a twin holding the file's values (a fast path) or by a real load (its public
twin, which judges every failure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasave._errors import CorruptArtifactError, KerasaveError, error_for, first_line
from kerasave._fastpaths.patches import Recorded
from kerasave._report import Check
from kerasave._runtime.lazy import keras
from kerasave.compare.lost import refuse_rnn_states
from kerasave.compare.verify import compare_whole_models
from kerasave.formats._base import (
    ModelFormat,
    mend_compile_config,
    require_config,
    require_model,
)

__all__ = ["WholeModelFormat", "LOAD", "map_load_error", "loaded_check", "twin_check"]

LOAD = "could not load the model"  # (what a failed load says first)


def map_load_error(exc: Exception, path: Path) -> KerasaveError:
    """What a load of a whole model raised, as kerasave's error (``_errors.FOREIGN``)."""
    return (error_for(exc, path, LOAD, at="load")
            or CorruptArtifactError(f"{LOAD}: {first_line(exc)}", path=path))


def loaded_check(model: keras.Model, path: Path, load: Any, *,
                  build_configs: bool = True) -> list[Check]:
    """Verification by a real load: a fresh model from the file, compared."""
    try:
        # Every value is compared bit for bit: a zip CRC adds nothing.
        loaded = load(path, checksummed=True)
    except Exception as exc:
        return [Check("load", False, str(map_load_error(exc, path)))]
    return [Check("load", True, "a fresh model from the file"),
            *compare_whole_models(model, loaded, build_configs=build_configs)]


def twin_check(model: keras.Model, twin: keras.Model, recorded: Recorded, *,
               build_configs: bool = True) -> list[Check]:
    """Verification against a twin holding the file's values as recorded views (the
    fast path of a check; ``loaded_check`` is its public twin).

    A layer may derive state from its variables as they are loaded (an adapted
    ``Normalization`` recomputes its mean and variance): a twin whose variables
    were never assigned cannot show that. So a check that fails here is judged
    again by a real load (``attempt(..., ok=passed)``), which is what a failure
    report must describe.
    """
    return [Check("load", True, "a fresh model from the file"),
            *compare_whole_models(model, twin, recorded, build_configs=build_configs)]


class WholeModelFormat(ModelFormat):
    """A whole model: config, variables, optimizer state and compile settings."""

    description = "whole model"
    holds_architecture = True
    can_hold_optimizer = True
    verifiable_config = True

    def preflight(self, model: keras.Model, path: Path) -> None:
        # (an unbuilt model too: its config is what Keras saves, and loads unbuilt)
        require_model(model, path)
        mend_compile_config(model)  # (first: the config serialized next is the checks' too)
        require_config(model, path)
        refuse_rnn_states(model, path, self.name)
