"""Copies of a checkpoint's state in host memory, for a background save (fast path
``background_copies``).

TensorFlow's own async checkpointing works this way: each trackable copies its
state to the CPU (``_copy_trackable_to_cpu``), and the checkpoint's saver is
pointed at the copies (``_object_map``). Both are private. When the fast path
is off, ``CheckpointManager.save(blocking=False)`` writes before it returns,
as ``blocking=True`` does: the same checkpoint, with the training loop waiting
(the public twin; the manager calls this through ``attempt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasave._errors import KerasaveError
from kerasave._fastpaths import Unsupported
from kerasave._runtime.lazy import keras, tf

__all__ = ["snapshot"]


def snapshot(roots: dict[str, Any], copies: Any, directory: Path | str
             ) -> tuple[Any, Any]:
    """A ``tf.train.Checkpoint`` of ``roots`` that writes copies of today's values.

    ``copies`` is the previous call's (reused from save to save) or None.
    Returns ``(checkpoint, copies)``; ``copies`` maps each variable to its copy.

    Raises:
        Unsupported: this TensorFlow differs: write blocking.
        KerasaveError: a trackable cannot be copied (say so: write blocking).
    """
    from tensorflow.python.trackable.base import Trackable
    from tensorflow.python.util import object_identity

    checkpoint = tf.train.Checkpoint(**roots)
    saver = getattr(checkpoint, "_saver", None)
    if saver is None or not hasattr(saver, "_object_map"):
        raise Unsupported("this TensorFlow's checkpoint saver differs")
    if copies is None:
        copies = object_identity.ObjectIdentityDictionary()
    for obj in tf.train.TrackableView(checkpoint).descendants():
        if obj is checkpoint:  # (``write`` has no save counter: do not create one)
            continue
        if isinstance(obj, keras.Variable):
            inner = obj.value
            if obj not in copies or tuple(copies[obj].shape) != tuple(obj.shape):
                with tf.device("CPU:0"):
                    copies[obj] = tf.Variable(inner, trainable=False,
                                              name=inner._shared_name)
            else:
                copies[obj].assign(inner)
        elif type(obj)._copy_trackable_to_cpu is not Trackable._copy_trackable_to_cpu:
            obj._copy_trackable_to_cpu(object_map=copies)
        elif type(obj)._serialize_to_tensors is not Trackable._serialize_to_tensors:
            raise KerasaveError(
                f"{type(obj).__name__} cannot be copied for a background save; "
                "use save(blocking=True)", path=directory)
    saver._object_map = copies
    return checkpoint, copies
