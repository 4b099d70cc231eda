"""What the deployment exports share (``onnx``, ``litert``): Keras' own export,
verification in the artifact's own runtime, and the serving object ``load_model`` gives.

An export holds the model's forward pass for another runtime: no optimizer, no
Keras config, and weights the converter may have transposed or folded. So a
save is proven by running it: the artifact is loaded in its own runtime
(onnxruntime, LiteRT's interpreter), its declared inputs and outputs (names,
dtypes, shapes, a dynamic batch dimension) are checked against the model's,
and it serves probe batches of two batch sizes whose every output is compared
with the model's own, under ``kerasave.compare.tolerance``'s policy (the runtimes'
kernels differ from TensorFlow's: a bit-exact answer is reported as such, any
other with its largest absolute and relative differences and the tolerance it
met).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kerasave._errors import (
    CorruptArtifactError,
    KerasaveError,
    NotSerializableError,
    UnknownFormatError,
    UnsafeArtifactError,
    first_line,
)
from kerasave._report import Check
from kerasave._runtime.lazy import keras, tf
from kerasave.compare.state import keras_warnings
from kerasave.compare.tolerance import compare_within
from kerasave.compare.verify import probe_inputs, to_numpy
from kerasave.formats._base import ModelFormat, require_built
from kerasave.formats._onnxproto import Port

__all__ = ["ExportFormat", "Served", "Port", "EXTRA", "input_signature", "layer_of",
           "captured_stderr", "SECOND_BATCH", "serve_batch", "graph_outputs", "available",
           "mapped"]

EXTRA = "pip install 'kerasave[export]'"
SECOND_BATCH = 1  # rows of the second probe batch (the first has the probe's own)


def available(*modules: str) -> list[str]:
    """Which of ``modules`` cannot be imported here (found without importing them)."""
    import importlib.util

    missing = []
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    return missing


def mapped(path: Path) -> memoryview:
    """A file's bytes, mapped read-only: the readers keep views of it and copy nothing
    (the mapping lives as long as a view does)."""
    import mmap

    with open(path, "rb") as f:
        if not f.seek(0, 2):
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


# -- the model's side ------------------------------------------------------------------

def _model_inputs(model: keras.Model) -> list[Any] | None:
    """The model's symbolic inputs, flattened, when it has them (functional, Sequential)."""
    try:
        inputs = model.inputs if isinstance(model, keras.Sequential) else model.input
    except Exception:  # (a subclassed model has none)
        return None
    leaves = keras.tree.flatten(inputs) if inputs is not None else []
    return leaves if leaves and all(isinstance(t, keras.KerasTensor) for t in leaves) else None


def input_signature(model: keras.Model) -> list[Any] | None:
    """The ``input_signature`` Keras' export would compute, from public names: one
    ``InputSpec`` per input with a dynamic batch dimension, in the model's input
    structure (None: let Keras compute it, for a subclassed model).

    Keras' ONNX export refuses a model that was built but never called; the
    signature given here lets it export any built functional or Sequential model."""
    if _model_inputs(model) is None:
        return None

    def spec(t: Any) -> Any:
        shape = (None, *tuple(t.shape)[1:]) if len(t.shape) else ()
        return keras.InputSpec(shape=shape, dtype=keras.backend.standardize_dtype(t.dtype),
                               name=t.name)

    if isinstance(model, keras.Sequential):
        return [spec(t) for t in model.inputs]
    return [keras.tree.map_structure(spec, model.input)]


def input_names(model: keras.Model) -> list[str] | None:
    found = _model_inputs(model)
    return None if found is None else [t.name for t in found]


def _layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)


def layer_of(model: keras.Model, path: str) -> str | None:
    """The layer a graph node belongs to, from its name scopes (``functional_1/gam_1/Lgamma``:
    TensorFlow suffixes each layer's scope with ``_N``); the innermost layer named wins."""
    names = {layer.name for layer in _layers(model)}
    found = None
    for part in re.split(r"[/@]", path):
        bare = re.sub(r"_\d+$", "", part)
        if bare in names:
            found = bare
        elif part in names:
            found = part
    return found


def named_ops(model: keras.Model, ops: Sequence[tuple[str, str]]) -> str:
    """``Lgamma (layer 'gam'), BesselI1e (layer 'gam')`` for (op type, node path) pairs."""
    shown: list[str] = []
    for op, path in ops:
        layer = layer_of(model, path) if path else None
        text = f"{op} (layer {layer!r})" if layer else (f"{op} (at {path})" if path else op)
        if text not in shown:
            shown.append(text)
    return ", ".join(shown)


# -- quiet runtimes ----------------------------------------------------------------------

@contextlib.contextmanager
def captured_stderr(drop: str | None = None) -> Iterator[list[str]]:
    """The process's stderr (the C++ runtimes write to the descriptor) captured into the
    yielded list; on leaving, the lines not matching ``drop`` are written back,
    unless the block raised (its error says what matters)."""
    import sys

    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor to capture
        yield lines
        return
    failed = False
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [line for line in lines if drop is None or not re.search(drop, line)]
            if kept and not failed:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


@contextlib.contextmanager
def logged(name: str, level: int = logging.ERROR) -> Iterator[list[logging.LogRecord]]:
    """The records a library's Python logger emits at ``level`` or above, kept instead
    of printed (tf2onnx prints each op it cannot convert)."""
    logger = logging.getLogger(name)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    before = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers = [Keep(level)]
    logger.propagate = False
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    try:
        yield records
    finally:
        logger.handlers, logger.propagate, _ = before
        logger.setLevel(before[2])


# -- the serving object ------------------------------------------------------------------

class Served:
    """An export loaded in its own runtime, as ``load_model`` gives it.

    ``serve(*inputs, **named)`` takes NumPy arrays (or what ``np.asarray``
    accepts), positionally in the order of ``inputs`` or by input name, and
    returns NumPy arrays: the array of a model with one output, else a tuple in
    the order of ``outputs`` (the order ``keras.tree.flatten`` gives the model's
    outputs). The batch dimension may be any size. ``inputs`` and ``outputs``
    list each port's ``name``, ``dtype`` and ``shape`` (None: dynamic).
    """

    def __init__(self, path: Path, format: str, runtime: str, inputs: tuple[Port, ...],
                 outputs: tuple[Port, ...], run: Callable[[list[np.ndarray]], list[Any]]):
        self.path = str(path)
        self.format = format
        self.runtime = runtime
        self.inputs = inputs
        self.outputs = outputs
        self._run = run

    def __repr__(self) -> str:
        ins = ", ".join(str(p) for p in self.inputs)
        outs = ", ".join(str(p) for p in self.outputs)
        return f"<kerasave served {self.format} export {self.path!r} ({ins}) -> ({outs})>"

    def _arrays(self, inputs: tuple[Any, ...], named: dict[str, Any]) -> list[np.ndarray]:
        if inputs and named:
            raise TypeError("serve() takes its inputs either by position or by name, not both")
        wanted = [p.name for p in self.inputs]
        if named:
            unknown = sorted(set(named) - set(wanted))
            missing = [n for n in wanted if n not in named]
            if unknown or missing:
                raise TypeError(f"serve() takes the inputs {wanted}; received {sorted(named)}")
            inputs = tuple(named[n] for n in wanted)
        if len(inputs) == 1 and len(wanted) > 1 and isinstance(inputs[0], (list, tuple, dict)):
            one = inputs[0]  # the model's own input structure, as Keras takes it
            inputs = tuple(one[n] for n in wanted) if isinstance(one, dict) else tuple(one)
        if len(inputs) != len(wanted):
            raise TypeError(f"serve() takes {len(wanted)} inputs ({', '.join(wanted)}); "
                            f"received {len(inputs)}")
        arrays = []
        for port, value in zip(self.inputs, inputs):
            array = np.asarray(value)
            if port.dtype != str(array.dtype):
                if not np.can_cast(array.dtype, port.dtype, "same_kind"):
                    raise TypeError(f"input {port.name!r} takes {port.dtype}; received "
                                    f"{array.dtype}")
                array = array.astype(port.dtype)
            arrays.append(np.ascontiguousarray(array))
        return arrays

    def serve(self, *inputs: Any, **named: Any) -> Any:
        """Run the export on one batch: NumPy in, NumPy out."""
        outputs = [np.asarray(o) for o in self._run(self._arrays(inputs, named))]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    __call__ = serve


# -- the handler ---------------------------------------------------------------------------

class ExportFormat(ModelFormat):
    """A deployment export written by Keras' ``model.export`` and run in its own runtime."""

    kind = "model"
    description = "deployment export"
    exporter: ClassVar[str]  # Keras' name of the format (model.export(format=...))
    writes_with: ClassVar[tuple[str, ...]] = ()  # modules the export needs
    runs_with: ClassVar[tuple[str, ...]] = ()  # modules loading it needs

    # -- what subclasses provide --------------------------------------------------------
    def _export(self, model: keras.Model, path: Path) -> None:
        raise NotImplementedError

    def _refuse_unsupported(self, model: keras.Model, path: Path) -> None:
        """After the export: raise NotSerializableError naming the ops the runtime lacks."""

    def _open(self, path: Path) -> Served:
        raise NotImplementedError

    def inspect_ports(self, path: Path) -> tuple[tuple[Port, ...], tuple[Port, ...]]:
        """The inputs and outputs the file declares, read without its runtime."""
        raise NotImplementedError

    def failing_ops(self, path: Path, error: str) -> list[tuple[str, str]]:
        """(op, node path) of the operation a runtime error names, if it names one."""
        return []

    def safety(self, path: Path) -> None:
        """Refuse (``UnsafeArtifactError``/``CorruptArtifactError``), before the runtime
        reads it, a file that would make it read outside the artifact."""

    # -- the handler ---------------------------------------------------------------------
    def require(self, modules: tuple[str, ...], doing: str, path: Path) -> None:
        missing = available(*modules)
        if missing:
            raise UnknownFormatError(
                f"{doing} the {self.name} format needs {', '.join(missing)}, which is not "
                f"installed: {EXTRA}", path=path)

    def preflight(self, model: keras.Model, path: Path) -> None:
        require_built(model, path)
        self.require(self.writes_with + self.runs_with, "saving", path)

    def write(self, model: keras.Model, path: Path) -> None:
        path.unlink(missing_ok=True)
        with keras_warnings():
            self._export(model, path)
        self._refuse_unsupported(model, path)

    def load(self, path: Path, *, compile: bool = True, safe_mode: bool = True,
             custom_objects: Any = None, checksummed: bool = False,
             mmap: bool = False) -> Served:
        # (an export holds no Keras config or compile settings: nothing to choose)
        if mmap:
            raise UnknownFormatError(
                f"mmap=True maps the variables of a .keras or legacy .h5 model; a {self.name} "
                "export is read by its own runtime: load it without mmap", path=path)
        if not self.exists(path):
            raise CorruptArtifactError(f"not a {self.name} file", path=path)
        self.require(self.runs_with, "loading", path)
        self.safety(path)
        return self._open(path)

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        try:
            served = self.load(path)
        except (CorruptArtifactError, UnknownFormatError, UnsafeArtifactError) as exc:
            return [Check("load", False, str(exc))]
        checks = [Check("load", True, f"runs in {served.runtime}")]
        probe = probe_inputs(model)
        if probe is None:
            return checks + [Check("serving outputs", False, "no input shapes to probe with")]
        batches = [probe, keras.tree.map_structure(lambda a: a[:SECOND_BATCH], probe)]
        sizes = [_rows(b) for b in batches]
        if sizes[0] == sizes[1]:  # (a probe of one row: the second batch gets three)
            batches[1] = keras.tree.map_structure(lambda a: np.concatenate([a] * 3), probe)
            sizes[1] = _rows(batches[1])
        arrays = [[np.asarray(a) for a in keras.tree.flatten(b)] for b in batches]
        order, inputs = _pair_inputs(model, arrays[0], served.inputs)
        checks.append(inputs)
        call = _graph_call(model)
        expected_structure = call(batches[0])
        expected = [[to_numpy(x) for x in keras.tree.flatten(expected_structure)]]
        expected.append([to_numpy(x) for x in keras.tree.flatten(call(batches[1]))])
        checks.append(_outputs_check(expected_structure, expected[0], served.outputs))
        if not inputs.ok or not checks[-1].ok:
            return checks
        pairs = []
        for batch, want, size in zip(arrays, expected, sizes):
            try:
                got = served.serve(*[batch[i] for i in order])
            except Exception as exc:  # a runtime that cannot run the batch: a failed check
                ops = self.failing_ops(path, str(exc))
                where = f" (in {named_ops(model, ops)})" if ops else ""
                return checks + [Check("serving outputs", False,
                                       f"could not run a batch of {size}{where}: "
                                       f"{' '.join(str(exc).split())}")]
            got = list(got) if isinstance(got, tuple) else [got]
            if len(got) != len(want):
                return checks + [Check("serving outputs", False,
                                       f"{len(got)} outputs, expected {len(want)}")]
            pairs += [(f"output {i} (batch of {size})", e, a)
                      for i, (e, a) in enumerate(zip(want, got))]
        checks.append(compare_within("serving outputs", pairs,
                                     where=f"at batch sizes {sizes[0]} and {sizes[1]}"))
        return checks

    # -- reading without a model ---------------------------------------------------------
    def whole_at(self, path: Path) -> bool:
        return False


_GRAPH_CALLS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _graph_call(model: keras.Model) -> Any:
    """``model(x, training=False)`` as a graph for batches of any size: what an exporter
    traces (one trace per model and input structure; the model held weakly)."""
    try:
        cached = _GRAPH_CALLS.get(model)
    except TypeError:  # a user's class that is not hashable
        cached = None
    if cached is not None:
        return cached
    ref = weakref.ref(model)
    call = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)  # type: ignore[misc]  # (held while called)
    try:
        _GRAPH_CALLS[model] = call
    except TypeError:
        pass
    return call


def graph_outputs(model: keras.Model, batch: Any) -> list[np.ndarray]:
    """The model's outputs on one batch, computed as an exporter traces it (``_graph_call``)."""
    return [to_numpy(x) for x in keras.tree.flatten(_graph_call(model)(batch))]


def serve_batch(model: keras.Model, served: Served, batch: Any) -> list[np.ndarray]:
    """``served`` run on one batch of the model's inputs (each fed to the export's input
    of its name, else by position), its outputs as a list."""
    arrays = [np.asarray(a) for a in keras.tree.flatten(batch)]
    order, _ = _pair_inputs(model, arrays, served.inputs)
    got = served.serve(*[arrays[i] for i in order] if order else arrays)
    return list(got) if isinstance(got, tuple) else [got]


def _rows(batch: Any) -> int:
    return int(np.asarray(keras.tree.flatten(batch)[0]).shape[0])


def _dims(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "unknown rank"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")")


def _port_problem(port: Port, dtype: str, shape: tuple[int | None, ...]) -> str | None:
    """What is wrong with an export's port for a model tensor of ``dtype`` and ``shape``
    (None in ``shape``: the model leaves it open; the batch dimension comes first)."""
    if port.dtype != dtype:
        return f"dtype {port.dtype}, the model's is {dtype}"
    if port.shape is None:
        return None  # (unknown rank: the runtime accepts any shape)
    if len(port.shape) != len(shape):
        return f"shape {_dims(port.shape)}, the model's is {_dims(shape)}"
    if shape and port.shape[0] is not None:
        return f"a fixed batch dimension of {port.shape[0]} (the model's is dynamic)"
    for mine, theirs in zip(shape[1:], port.shape[1:]):
        if theirs is not None and mine is not None and mine != theirs:
            return f"shape {_dims(port.shape)}, the model's is {_dims(shape)}"
        if theirs is not None and mine is None:
            return f"shape {_dims(port.shape)} fixes a dimension the model leaves open " \
                   f"({_dims(shape)})"
    return None


def _pair_inputs(model: keras.Model, probe: list[np.ndarray],
                 ports: tuple[Port, ...]) -> tuple[list[int], Check]:
    """Which model input feeds each export input (by name when the export keeps the
    model's names, else by position), and the check of their names, dtypes and shapes."""
    names = input_names(model)
    if len(ports) != len(probe):
        return [], Check("inputs", False, f"the export takes {len(ports)} inputs, the model "
                                          f"{len(probe)}")
    by_name = names is not None and sorted(names) == sorted(p.name for p in ports)
    order = [names.index(p.name) for p in ports] if by_name and names else list(
        range(len(ports)))
    specs = _input_shapes(model, probe)
    bad = []
    for port, i in zip(ports, order):
        dtype, shape = str(probe[i].dtype), specs[i]
        problem = _port_problem(port, dtype, shape)
        if problem:
            bad.append(f"{port.name}: {problem}")
    if bad:
        return order, Check("inputs", False, "; ".join(bad))
    how = "by name" if by_name else "by position"
    if names is not None and not by_name:
        how += f" (the model names them {', '.join(names)})"
    return order, Check("inputs", True, ", ".join(str(p) for p in ports) + f"; matched {how}")


def _input_shapes(model: keras.Model, probe: list[np.ndarray]) -> list[tuple[int | None, ...]]:
    found = _model_inputs(model)
    if found is not None:
        return [(None, *tuple(t.shape)[1:]) if len(t.shape) else () for t in found]
    return [(None, *a.shape[1:]) if a.ndim else () for a in probe]


def _outputs_check(structure: Any, expected: list[np.ndarray],
                   ports: tuple[Port, ...]) -> Check:
    if len(ports) != len(expected):
        return Check("outputs", False,
                     f"the export gives {len(ports)} outputs, the model {len(expected)}")
    bad = []
    if isinstance(structure, dict):
        keys = [str(k) for k in sorted(structure)]
        if [p.name for p in ports] != keys:
            bad.append(f"named {[p.name for p in ports]}, the model's are {keys}")
    for i, (port, array) in enumerate(zip(ports, expected)):
        shape = (None, *array.shape[1:]) if array.ndim else ()
        problem = _port_problem(port, str(array.dtype), shape)
        if problem:
            bad.append(f"output {i} ({port.name}): {problem}")
    if bad:
        return Check("outputs", False, "; ".join(bad))
    return Check("outputs", True, ", ".join(str(p) for p in ports))


def refusal(handler: ExportFormat, model: keras.Model, what: str,
            ops: Sequence[tuple[str, str]], why: str = "") -> NotSerializableError:
    """NotSerializableError naming the ops (and their layers) an exporter or runtime lacks
    (raised while writing a temporary: the save names its target)."""
    return NotSerializableError(
        f"the {handler.name} export cannot hold this model: {what} "
        f"{named_ops(model, ops)}" + (f" ({why})" if why else ""))


def wrap_export_error(handler: ExportFormat, model: keras.Model, exc: BaseException,
                      ops: Sequence[tuple[str, str]]) -> KerasaveError:
    """What an exporter raised, as NotSerializableError naming the ops it found."""
    if isinstance(exc, KerasaveError):
        return exc
    if ops:
        return refusal(handler, model, "its converter does not support", ops,
                       first_line(exc))
    return NotSerializableError(
        f"Keras could not write the {handler.name} format: {first_line(exc, typed=True)}")
