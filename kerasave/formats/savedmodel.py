"""SavedModel export directories, for serving (``model.export``).

An export holds the inference function and the variables it needs, not the
optimizer or the Keras config: loading gives TensorFlow's restored serving
object (call ``.serve(x)``), not a Keras model. A SavedModel Keras 2 wrote
(``keras_metadata.pb`` beside ``saved_model.pb``) loads as a Keras 3 model
instead: ``formats.keras2_savedmodel``.
"""

from __future__ import annotations

import contextlib
import mmap
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerasave._errors import (
    ArchitectureMismatchError,
    CorruptArtifactError,
    UnknownFormatError,
    foreign_errors,
)
from kerasave._fastpaths import Unsupported, attempt
from kerasave._fastpaths.dlpack import Loaded
from kerasave._report import Check, Variable
from kerasave._runtime.lazy import keras, tf
from kerasave.compare.state import keras_warnings
from kerasave.compare.tolerance import compare_within
from kerasave.compare.verify import (
    compare_arrays,
    compare_outputs,
    pair_variables,
    probe_inputs,
    to_numpy,
)
from kerasave.formats import _pairing, checkpoint
from kerasave.formats._base import Contents, ModelFormat, ReadArray, passed
from kerasave.formats._tf import opscan as _opscan
from kerasave.formats._tf import protowire as _protowire
from kerasave.formats._tf.graph import GRAPH_KEY, VALUE, read_graph
from kerasave.formats._tf.tfindex import Location, check_index, masked_crc32c, tensor_locations
from kerasave.keras2 import savedmodel as keras2_savedmodel
from kerasave.store.crc import crc32c_of

__all__ = ["SavedModelHandler", "compare_serving", "compare_export_variables"]


def _restored(path: Path) -> tuple[Any, list[Any]]:
    """A save's own export loaded for verification, and the variables it restored (to
    ``_release``): fast path ``savedmodel_pages``, whose public twin is TensorFlow's
    own ``tf.saved_model.load``.

    ``tf.saved_model.load`` restores the variables through TensorFlow's reader,
    which copies each tensor twice (0.3-0.5 s for a 670 MB export here). This
    loads the functions and objects without the checkpoint, pairs each saved
    tensor with the restored variable its object graph names, and gives the
    variable the file's pages, mapped copy-on-write: nothing is read or
    allocated but what the serving function touches. Every tensor's CRC32C is
    checked, as TensorFlow's reader does. Only for a save's own export
    (``check(..., own=True)``).

    Raises:
        Unsupported: anything but plain variables, or a tensor that fails its
            CRC32C (TensorFlow's own load then reports the damage).
    """
    prefix = path / "variables" / "variables"
    reader = _pairing.checked_reader(prefix)
    graph = read_graph(reader, prefix)
    served = tf.saved_model.load(
        str(path), options=tf.saved_model.LoadOptions(experimental_skip_checkpoint=True))
    pairs: list[tuple[str, Any]] = []

    def walk() -> bool:
        for visit in graph.beside(served):
            for attr in visit.node.attributes:
                if attr.name != VALUE or not isinstance(visit.obj, tf.Variable):
                    return False  # other saved state (tables, iterators): TensorFlow's load
                pairs.append((attr.checkpoint_key, visit.obj))
            # (an unmatched child holding nothing is a function or a signature)
            if any(graph.holds_values(c.node_id, any_state=True) for c in visit.unmatched):
                return False
        return True

    try:
        if not walk():
            raise Unsupported("the export holds other state than variables")
        keys = {key for key, _ in pairs}
        restored = {id(v) for _, v in pairs}
        if any(id(v) not in restored for v in getattr(served, "variables", ())) or (
                set(reader.get_variable_to_shape_map()) - {GRAPH_KEY} != keys):
            raise Unsupported("the export's variables are not the checkpoint's")
        where = tensor_locations(prefix)
        pages = {}
        for shard in {found.shard for found in where.values()}:
            with open(shard, "rb") as f:  # private pages: a write would copy, not reach the file
                pages[shard] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        for key, variable in pairs:
            found = where.get(key)
            count = int(np.prod(found.shape, dtype=np.int64)) if found else 0
            if (found is None or count == 0
                    or found.offset + count * found.dtype.itemsize > len(pages[found.shard])):
                variable.assign(reader.get_tensor(key))  # (TensorFlow checks its CRC32C)
                continue
            array = np.frombuffer(pages[found.shard], found.dtype, count,
                                  found.offset).reshape(found.shape)
            # Each tensor's own CRC32C, as TensorFlow's reader checks it: a damaged
            # tensor the probe batch never touches must fail too.
            if not _intact(array, found):
                raise Unsupported(f"{key} fails its CRC32C: TensorFlow's load reports it")
            # The variable adopts the mapped pages where they are 64-byte aligned
            # (no copy at all); elsewhere TensorFlow copies them once.
            variable.assign(array.view(Loaded))
    except BaseException:
        _release(variable for _, variable in pairs)
        raise
    return served, [variable for _, variable in pairs]


def _intact(array: np.ndarray, found: Location) -> bool:
    """Whether a saved tensor's bytes match the CRC32C stored with them."""
    return masked_crc32c(crc32c_of(array)) == found.masked_crc32c


def _release(variables: Any) -> None:
    """Give back the file pages restored variables adopted now, not when the cycle
    collector gets to the loaded object: each variable gets an empty value. (Their
    handles are reference-counted, so destroying the resource would not do it.)"""
    for variable in variables:
        try:
            tf.raw_ops.AssignVariableOp(resource=variable.handle,
                                        value=tf.zeros([0], variable.dtype),
                                        validate_shape=False)
        except Exception:
            pass


_GRAPH_CALLS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _graph_call(model: keras.Model, *, fresh: bool = False) -> Any:
    """``model(p, training=False)`` as a graph, traced once per model.

    A new ``tf.function`` at every save would trace the model again each time
    (about 20 ms for the tutorial's model), and TensorFlow warns about
    "retracing" from the fifth. The function holds the model weakly, so keeping
    it keeps nothing alive. ``fresh`` traces again: a Python-level change to the
    model since the first trace (a layer's activation swapped) is not in it.
    """
    if not fresh:
        try:
            cached = _GRAPH_CALLS.get(model)
        except TypeError:  # a user's class that is not hashable
            cached = None
        if cached is not None:
            return cached
    ref = weakref.ref(model)
    call = tf.function(lambda p: ref()(p, training=False))  # type: ignore[misc]  # (held while called)
    try:
        _GRAPH_CALLS[model] = call
    except TypeError:
        pass
    return call


def compare_serving(model: keras.Model, served: Any, probe: Any) -> Check:
    """``served.serve(probe)`` against the model's own outputs: bit for bit, or within
    the tolerance when the export's variables are the model's bit for bit.

    The export runs as a graph, where oneDNN fuses ops and may round differently
    from eager execution (~1 ulp): the model runs as a graph too. A difference
    is judged again against a fresh trace (see ``_graph_call``). What differs
    still comes from how TensorFlow's graph optimizer rewrites the loaded
    serving function (it regroups a chain of additions, for one): when every
    variable the export holds is bit-exact with the model's, the outputs are
    judged under ``kerasave.compare.tolerance``'s policy, and the check says so.
    """
    name = "serving outputs"
    try:  # Keras exports one positional argument holding the whole input structure.
        actual = [to_numpy(x) for x in keras.tree.flatten(served.serve(probe))]
    except Exception as exc:  # a restored model that cannot run is a failed check
        return Check(name, False, f"could not run the restored model: {exc}")
    check = _exactly(name, _graph_call(model)(probe), actual)
    if check.ok:
        return check
    check = _exactly(name, _graph_call(model, fresh=True)(probe), actual)
    if check.ok or "outputs, expected" in check.detail:
        return check
    variables = compare_export_variables(model, served)
    if not variables.ok:
        return Check(name, False, f"{check.detail} (no tolerance: the export's variables "
                                  f"differ from the model's: {variables.detail})")
    expected = [to_numpy(x) for x in keras.tree.flatten(_graph_call(model)(probe))]
    within = compare_within(name, [(f"output {i}", e, a)
                                   for i, (e, a) in enumerate(zip(expected, actual))])
    if not within.ok:
        return within
    return Check(name, True, f"{within.detail}; {variables.detail}, so the difference is "
                             "how TensorFlow's graph optimizer computes the serving function")


def _exactly(name: str, expected: Any, actual: list[np.ndarray]) -> Check:
    return compare_outputs(name, expected, lambda: actual)


def compare_export_variables(model: keras.Model, served: Any) -> Check:
    """The served object's variables against the model's, in order, bit for bit
    (Keras' export lists ``model.variables`` as the object's ``variables``)."""
    listed = getattr(served, "variables", None)
    if listed is None:
        return Check("export variables", False, "the export lists no variables")
    listed, live = list(listed), list(model.variables)
    if len(listed) != len(live):
        return Check("export variables", False,
                     f"the export lists {len(listed)} variables, the model has {len(live)}")
    check = compare_arrays("export variables", pair_variables(live, listed))
    if check.ok:
        return Check("export variables", True,
                     f"the export's {len(live)} variables are bit-exact with the model's")
    return check


class SavedModelHandler(ModelFormat):
    name = "savedmodel"
    kind = "model"
    manifest_inside = True
    description = "serving export"
    array_names = "checkpoint keys as saved"

    def members(self, path: Path) -> list[Path]:
        return [path] if path.exists() else []

    def exists(self, path: Path) -> bool:
        return (path / "saved_model.pb").is_file()

    def sniff(self, path: Path) -> bool:
        return path.is_dir() and self.exists(path)

    def whole_at(self, path: Path) -> bool:
        return keras2_savedmodel.is_keras2(path)

    def description_at(self, path: Path) -> str:
        return ("Keras 2 whole model" if keras2_savedmodel.is_keras2(path)
                else self.description)

    def left_out(self, path: Path) -> dict[str, str]:
        return keras2_savedmodel.left_out(path) if keras2_savedmodel.is_keras2(path) else {}

    def write(self, model: keras.Model, path: Path) -> None:
        if path.exists():
            shutil.rmtree(path)
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # not "INFO: Assets written to: <the temporary name>"
        try:
            with keras_warnings():
                model.export(str(path), format="tf_saved_model", verbose=False)
        finally:
            logger.setLevel(level)

    def load(self, path: Path, *, compile: bool = True, safe_mode: bool = True,
             custom_objects: Any = None, checksummed: bool = False,
             mmap: bool = False) -> Any:
        # (an export holds no Keras config or compile settings: nothing to choose)
        if mmap:
            raise UnknownFormatError(
                "mmap=True maps the variables of a .keras or legacy .h5 model; a SavedModel "
                "is read by TensorFlow's loader: load it without mmap", path=path)
        if not self.exists(path):
            raise CorruptArtifactError("not a SavedModel directory (no saved_model.pb)",
                                       path=path)
        if keras2_savedmodel.is_keras2(path):
            return keras2_savedmodel.load(path, compile=compile, safe_mode=safe_mode,
                                          custom_objects=custom_objects,
                                          checksummed=checksummed)
        # A SavedModel is a program: what it may do is judged before TensorFlow reads it.
        _opscan.scan(path, safe_mode=safe_mode)
        prefix = path / "variables" / "variables"
        if prefix.with_name("variables.index").is_file():
            # TensorFlow's restore allocates every tensor the index declares.
            check_index(prefix)
        with foreign_errors(path, "could not load the SavedModel", at="run"):
            return tf.saved_model.load(str(path))

    def check(self, model: keras.Model, path: Path, *, own: bool = False) -> list[Check]:
        """``own``: ``path`` is kerasave's own export, written by this process just
        now, and its variables may be served from its mapped pages."""
        if keras2_savedmodel.is_keras2(path):
            return keras2_savedmodel.check(model, path)
        probe = probe_inputs(model)

        def public() -> list[Check]:
            try:
                served = self.load(path)
            except CorruptArtifactError as exc:
                return [Check("load", False, str(exc))]
            if probe is None:
                return [Check("load", True, "restored the serving object"),
                        Check("serving outputs", False, "no input shapes to probe with")]
            return self._served_checks(model, served, probe)

        def fast() -> list[Check]:
            served, variables = _restored(path)
            try:
                return self._served_checks(model, served, probe)
            finally:
                _release(variables)

        if not own or probe is None:
            return public()
        # A failure is judged again by TensorFlow's own load, which is what a failure
        # report must describe (``ok``).
        return attempt("savedmodel_pages", fast, public, ok=passed)

    @staticmethod
    def _served_checks(model: keras.Model, served: Any, probe: Any) -> list[Check]:
        return [Check("load", True, "restored the serving object"),
                compare_serving(model, served, probe)]

    def contents(self, path: Path) -> Contents:
        if not self.exists(path):
            raise CorruptArtifactError("not a SavedModel directory (no saved_model.pb)",
                                       path=path)
        prefix = path / "variables" / "variables"
        try:
            _, shapes, dtypes = _pairing.listed(prefix)
        except CorruptArtifactError as exc:
            raise CorruptArtifactError(f"unreadable SavedModel variables: {exc}",
                                       path=path) from exc
        variables = tuple(Variable(name, shapes[name], dtypes[name])
                          for name in sorted(shapes) if name != GRAPH_KEY)
        versions = {}
        with foreign_errors(path, "unreadable saved_model.pb"):
            sm = _protowire.saved_model_info((path / "saved_model.pb").read_bytes())
            if sm.meta_graphs:
                versions["tensorflow"] = sm.meta_graphs[0].meta_info_def.tensorflow_version
        has_optimizer = False
        if keras2_savedmodel.is_keras2(path):
            written, has_optimizer = keras2_savedmodel.describe(path)
            versions.update(written)
        return Contents(variables, has_optimizer, versions)

    def arrays(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        if not self.exists(path):
            raise CorruptArtifactError("not a SavedModel directory (no saved_model.pb)",
                                       path=path)
        prefix = path / "variables" / "variables"
        reader = _pairing.checked_reader(prefix)
        read_graph(reader, prefix)  # the object graph must parse
        for key in sorted(reader.get_variable_to_shape_map()):
            if key != GRAPH_KEY:
                yield key, _tensor(reader, key, path)

    @contextlib.contextmanager
    def reader(self, path: Path) -> Iterator[ReadArray]:
        if not self.exists(path):
            raise CorruptArtifactError("not a SavedModel directory (no saved_model.pb)",
                                       path=path)
        prefix = path / "variables" / "variables"
        try:
            _, shapes, dtypes = checkpoint.listed(prefix)  # (the object graph must parse)
        except CorruptArtifactError as exc:
            raise CorruptArtifactError(f"unreadable SavedModel variables: {exc}",
                                       path=path) from exc
        keys = {key for key in shapes if key != GRAPH_KEY}
        read = checkpoint.tensors(prefix, dtypes)

        def array(name: str) -> np.ndarray:
            if name not in keys:
                raise KeyError(name)
            return read(name)

        yield array

    def exported_variables(self, path: Path) -> list[tuple[str, np.ndarray]]:
        """The export's model variables, in ``model.variables`` order, by key."""
        prefix = path / "variables" / "variables"
        reader = _pairing.checked_reader(prefix)
        graph = read_graph(reader, prefix)
        listed = graph.children(0).get("variables")
        if listed is None:
            raise CorruptArtifactError(
                "the SavedModel lists no variables (not a Keras export?)", path=path)
        found = []
        for position, node_id in graph.children(listed).items():
            for attr in graph.nodes[node_id].attributes:
                if attr.name == VALUE:
                    found.append((int(position), attr.checkpoint_key))
        return [(key, _tensor(reader, key, path)) for _, key in sorted(found)]

    def load_variables(self, model: keras.Model, path: Path) -> None:
        """Assign the export's variables to ``model``'s, by position, all or nothing."""
        saved = self.exported_variables(path)
        live = list(model.variables)
        if len(saved) != len(live):
            raise ArchitectureMismatchError(
                f"the SavedModel holds {len(saved)} variables, the model has {len(live)}",
                path=path)
        bad = [f"{getattr(v, 'path', v.name)}: saved {a.shape} {a.dtype}, live "
               f"{tuple(v.shape)} {_dtype(v)}"
               for (_, a), v in zip(saved, live) if (a.shape, a.dtype) != (tuple(v.shape),
                                                                           _dtype(v))]
        if bad:
            raise ArchitectureMismatchError("; ".join(bad[:3]), path=path)
        for (_, value), variable in zip(saved, live):
            variable.assign(value)


def _dtype(variable: Any) -> np.dtype:
    return np.dtype(keras.backend.standardize_dtype(variable.dtype))


def _tensor(reader: Any, key: str, path: Path) -> np.ndarray:
    with foreign_errors(path, f"could not read the saved tensor {key}", at="run"):  # (CRC32C)
        return np.asarray(reader.get_tensor(key))
