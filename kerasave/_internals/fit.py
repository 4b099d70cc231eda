"""Where ``fit`` starts: the epoch a callback sets before training begins (fast path
``fit_initial_epoch``).

Keras' own ``BackupAndRestore`` resumes by setting the model's private
``_initial_epoch`` in ``on_train_begin``; ``fit`` then starts there. No public
call does this from inside ``fit``: when the fast path is off (or this Keras
ignores the attribute), a resume that must skip finished epochs says so and
asks for ``fit(initial_epoch=N)`` rather than train them again: that is the
public twin.
"""

from __future__ import annotations

from typing import Any

from kerasave._errors import KerasaveError
from kerasave._internals import attempt

__all__ = ["start_at"]


def start_at(model: Any, epoch: int, directory: Any) -> None:
    """Make the ``fit`` that is beginning start at ``epoch``."""
    if epoch == 0:
        return

    def fast() -> None:
        model._initial_epoch = epoch

    def public() -> None:
        raise KerasaveError(
            f"resuming from {directory} needs fit to start at epoch {epoch}, which this "
            f"Keras does not let a callback set: pass initial_epoch={epoch} to fit",
            path=directory)

    attempt("fit_initial_epoch", fast, public)
