"""The state ``kerasave.callbacks.Checkpoint`` keeps beside the model: callbacks'
states, the running metrics, and where the input pipeline stands.

Everything is written into the checkpoint itself: numbers, strings and lists go
into the checkpoint's JSON metadata, arrays (``EarlyStopping``'s best weights,
the metrics' totals, serialized ``tf.data`` iterators) into variables under one
extra object, ``fit``, so they are verified, kept and deleted with it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kerasave._errors import KerasaveError
from kerasave._runtime.lazy import keras, tf

__all__ = ["Holders", "decode", "encode", "iterator_state", "metric_values",
           "pipeline_concerns", "restore_iterator", "restore_metrics"]

_ARRAY, _BLOB = "__kerasave_array__", "__kerasave_blob__"
_NUMERIC_VOIDS = ("bfloat16", "float8_e4m3fn", "float8_e5m2")  # (ml_dtypes' NumPy types)


# -- values to JSON plus arrays -------------------------------------------------------

def encode(value: Any, arrays: list[np.ndarray], where: str) -> Any:
    """``value`` as JSON, its arrays appended to ``arrays`` (referred to by index).

    Accepted: None, bool, int, float (NaN and infinities too), str, bytes, lists and
    tuples (read back as lists), dicts with str keys, NumPy arrays and scalars,
    tensors and variables (read back as NumPy arrays).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, bytes):
        arrays.append(_padded(value))
        return {_BLOB: len(arrays) - 1, "length": len(value)}
    if isinstance(value, (np.ndarray, np.generic)) or tf.is_tensor(value) or isinstance(
            value, (tf.Variable, keras.Variable)):
        scalar = isinstance(value, np.generic)
        array = np.array(keras.ops.convert_to_numpy(value) if not isinstance(
            value, (np.ndarray, np.generic)) else value, copy=True)
        if array.dtype.kind in "OUSV" and array.dtype.name not in _NUMERIC_VOIDS:
            raise KerasaveError(f"{where}: an array of {array.dtype} cannot be kept "
                                "(numbers and booleans only; strings and bytes as such)")
        arrays.append(array)
        return {_ARRAY: len(arrays) - 1, "scalar": scalar}
    if isinstance(value, (list, tuple)):
        return [encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value) or _ARRAY in value or _BLOB in value:
            raise KerasaveError(f"{where}: a dict to keep needs str keys; "
                                f"received keys {sorted(map(repr, value))[:5]}")
        return {k: encode(v, arrays, f"{where}[{k!r}]") for k, v in value.items()}
    raise KerasaveError(f"{where}: cannot keep a value of type {type(value).__name__} "
                        "(numbers, strings, bytes, lists, dicts and arrays only)")


def decode(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, list):
        return [decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if _ARRAY in value:
            array = arrays[value[_ARRAY]]
            return array[()] if value.get("scalar") else array
        if _BLOB in value:
            return arrays[value[_BLOB]][: value["length"]].tobytes()
        return {k: decode(v, arrays) for k, v in value.items()}
    return value


def _padded(data: bytes) -> np.ndarray:
    """Bytes in a uint8 array of a power-of-two length (so that a variable holding
    them keeps its shape from save to save while the length varies a little)."""
    size = 1 << max(10, math.ceil(math.log2(max(len(data), 1))))
    out = np.zeros(size, np.uint8)
    out[: len(data)] = np.frombuffer(data, np.uint8)
    return out


class Holders:
    """The variables a checkpoint's arrays are written from and read into.

    A variable is reused from save to save while its shape and dtype stay (a
    background save's host copies are made per variable, once).
    """

    def __init__(self) -> None:
        self.root = tf.Module(name="kerasave_fit")
        self.root.arrays = []

    def put(self, arrays: list[np.ndarray],
            before_change: Any = None) -> list[list[Any]]:
        """Hold ``arrays`` for the next save; returns their specs for the metadata.

        ``before_change()`` runs first when the set of variables changes (a
        background save still verifying against them must finish first).
        """
        held, kept = list(self.root.arrays), []
        for i, array in enumerate(arrays):
            if i < len(held) and tuple(held[i].shape) == array.shape and \
                    held[i].dtype.as_numpy_dtype == array.dtype:
                held[i].assign(array)
                kept.append(held[i])
            else:
                with tf.device("CPU:0"):
                    kept.append(tf.Variable(array, trainable=False, name=f"fit_{i}"))
        if len(kept) != len(held) or any(a is not b for a, b in zip(kept, held)):
            if before_change is not None:
                before_change()
            self.root.arrays = kept  # (a tracked list may only grow: a new one)
        return [[list(a.shape), tf.as_dtype(a.dtype).name] for a in arrays]

    def expect(self, specs: list[list[Any]]) -> None:
        """Make variables of the shapes a checkpoint's metadata records, to read into."""
        self.put([np.zeros(tuple(shape), tf.as_dtype(dtype).as_numpy_dtype)
                  for shape, dtype in specs])

    def values(self) -> list[np.ndarray]:
        return [np.array(v.numpy(), copy=True) for v in self.root.arrays]


# -- tf.data iterators ----------------------------------------------------------------

def _resource(iterator: Any) -> Any:
    parts = tf.nest.flatten(iterator, expand_composites=True)
    if not isinstance(iterator, tf.data.Iterator) or len(parts) != 1 or \
            parts[0].dtype != tf.resource:
        raise KerasaveError(f"{type(iterator).__name__} is not a tf.data iterator "
                            "kerasave can save (a distribution strategy's?)")
    return parts[0]


def iterator_state(iterator: Any, policy: int = 2) -> bytes:
    """The serialized state of a ``tf.data`` iterator (what ``tf.train.Checkpoint``
    saves of it). ``policy``: ``tf.data.experimental.ExternalStatePolicy`` value
    (2, FAIL: a pipeline with state outside it, such as Python code or a stateful
    random op, cannot be saved)."""
    variant = tf.raw_ops.SerializeIterator(resource_handle=_resource(iterator),
                                           external_state_policy=policy)
    return bytes(tf.io.serialize_tensor(variant).numpy())


def restore_iterator(iterator: Any, state: bytes) -> None:
    tf.raw_ops.DeserializeIterator(resource_handle=_resource(iterator),
                                   serialized=tf.io.parse_tensor(state, tf.variant))


_SHUFFLES = {"ShuffleDataset", "ShuffleDatasetV2", "ShuffleDatasetV3",
             "ShuffleAndRepeatDataset", "ShuffleAndRepeatDatasetV2", "RandomDataset",
             "RandomDatasetV2", "ExperimentalRandomDataset"}
_RANDOM_OPS = {"RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal",
               "RandomShuffle", "Multinomial", "RandomGamma", "RandomPoisson",
               "RandomPoissonV2", "ParameterizedTruncatedNormal"}
_PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def pipeline_concerns(dataset: Any) -> list[str]:
    """What keeps this pipeline from giving the same elements in the same order in
    another process: unseeded random operations, non-deterministic parallelism,
    Python code whose state kerasave cannot see. Empty when none."""
    variant = tf.nest.flatten(dataset, expand_composites=True)[0]
    graph = tf.compat.v1.GraphDef.FromString(tf.raw_ops.DatasetToGraphV2(
        input_dataset=variant, external_state_policy=1,
        strip_device_assignment=True).numpy())
    consts = {n.name: n for n in graph.node if n.op == "Const"}
    found: list[str] = []

    def zero(name: str) -> bool:
        node = consts.get(name.split(":")[0])
        return node is not None and tf.make_ndarray(node.attr["value"].tensor).size == 1 \
            and int(tf.make_ndarray(node.attr["value"].tensor)) == 0

    def say(text: str) -> None:
        if text not in found:
            found.append(text)

    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    for node in nodes:
        if node.op in _SHUFFLES and len(node.input) >= 2:
            seeds = node.input[0:2] if "RandomDataset" in node.op else node.input[2:4]
            if len(seeds) == 2 and all(zero(i) for i in seeds):
                say(f"an unseeded {node.op.removesuffix('V3').removesuffix('V2')} "
                    "(pass seed=, or call keras.utils.set_random_seed first)")
        elif node.op in _RANDOM_OPS and node.attr["seed"].i == 0 and \
                node.attr["seed2"].i == 0:
            say(f"an unseeded random operation ({node.op}) in a dataset function")
        elif node.op.startswith("Stateful") or node.op in ("RngReadAndSkip", "RngSkip"):
            say(f"a tf.random.Generator ({node.op}) in a dataset function")
        elif node.op in _PYTHON_OPS:
            say("Python code (from_generator, py_function or numpy_function), whose "
                "state kerasave cannot see")
        if node.attr["deterministic"].s == b"false" or node.attr["sloppy"].b:
            say(f"a {node.op} with deterministic=False")
    if dataset.options().deterministic is False:
        say("tf.data.Options.deterministic = False")
    return found


# -- metrics --------------------------------------------------------------------------

def metric_values(model: Any) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v), copy=True)
            for v in getattr(model, "metrics_variables", [])]


def restore_metrics(model: Any, saved: list[np.ndarray], batch: Any) -> bool:
    """Put the running metrics back where a mid-epoch checkpoint left them.

    ``fit`` resets the metrics when an epoch begins, and builds the compiled ones
    on its first step: they are built here first (``model.compute_metrics`` on
    zeros shaped like ``batch``), so their variables exist to be set. False when
    the model's metrics do not match what was saved (nothing is changed then).
    """
    variables = list(getattr(model, "metrics_variables", []))
    if len(variables) != len(saved):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        spec = model.compute_output_spec(x)
        zeros = tf.nest.map_structure(lambda s: keras.ops.zeros(s.shape, s.dtype), spec)
        model.compute_metrics(x, y, zeros, sample_weight)
        variables = list(getattr(model, "metrics_variables", []))
    if len(variables) != len(saved) or any(
            tuple(v.shape) != a.shape for v, a in zip(variables, saved)):
        return False
    for variable, value in zip(variables, saved):
        variable.assign(value)
    return True
