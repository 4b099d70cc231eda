"""Directories ``tf.train.CheckpointManager`` wrote, adopted by ``CheckpointManager``.

Such a directory holds ``ckpt-N`` checkpoints without kerasave's manifests and
TensorFlow's own ``checkpoint`` file. kerasave numbers its checkpoints after
TensorFlow's and writes the model under the name TensorFlow's checkpoints give it
(the checkpoint guide's ``net``: ``CheckpointHandler.model_name`` reads it, and
the manager writes its ``Roots`` under it). Every manager directory, adopted or not, on
disk or at a URL, gets TensorFlow's ``checkpoint`` file, kept true after each
commit (``tell_tensorflow``), so that TensorFlow code reading the directory
(``tf.train.latest_checkpoint``) finds kerasave's checkpoints too.
"""

from __future__ import annotations

import re

from kerasave.store.base import Store

__all__ = ["state_text", "tell_tensorflow"]


def state_text(kept: list[tuple[str, float]], max_to_keep: int | None,
               old: str | None = None) -> str:
    """TensorFlow's ``checkpoint`` state file (``CheckpointState`` in its text format)
    naming ``kept`` (checkpoint names and times, oldest first).

    It lists the newest ``max_to_keep`` as the ones a TensorFlow manager may rotate
    out: checkpoints kept for ``best_k`` or ``keep_every_n_hours`` are left off its
    list, so that no TensorFlow manager deletes them. The ``last_preserved_timestamp``
    of the ``old`` file is kept.
    """
    rotating = kept if max_to_keep is None else kept[-max_to_keep:]
    lines = [f'model_checkpoint_path: "{kept[-1][0]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name, _ in rotating]
    lines += [f"all_model_checkpoint_timestamps: {time!r}" for _, time in rotating]
    preserved = re.search(r"^last_preserved_timestamp:\s*([0-9.eE+-]+)\s*$", old or "", re.M)
    if preserved:
        lines.append(f"last_preserved_timestamp: {preserved.group(1)}")
    return "\n".join(lines) + "\n"


def tell_tensorflow(directory: Store, kept: list[tuple[str, float]],
                    max_to_keep: int | None) -> None:
    """Write TensorFlow's ``checkpoint`` file in ``directory`` (replaced whole, on disk
    by a rename) to name ``kept`` (``state_text``), so that
    ``tf.train.latest_checkpoint(directory)`` gives the newest and TensorFlow code
    reading the directory finds kerasave's checkpoints."""
    if not kept:
        return
    directory.put_text("checkpoint", state_text(kept, max_to_keep,
                                                directory.read_text("checkpoint")))
