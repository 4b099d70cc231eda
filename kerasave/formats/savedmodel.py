"""SavedModel export directories, for serving (``model.export``).

An export holds the inference function and the variables it needs, not the
optimizer or the Keras config: loading gives TensorFlow's restored serving
object (call ``.serve(x)``), not a Keras model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from kerasave._errors import CorruptArtifactError
from kerasave._report import Check, Variable
from kerasave._state import keras_warnings
from kerasave._verify import compare_outputs, probe_inputs
from kerasave.formats._base import Contents, Handler

__all__ = ["SavedModelHandler"]


class SavedModelHandler(Handler):
    name = "savedmodel"
    kind = "model"

    def members(self, path: Path) -> list[Path]:
        return [path] if path.exists() else []

    def exists(self, path: Path) -> bool:
        return (path / "saved_model.pb").is_file()

    def sniff(self, path: Path) -> bool:
        return path.is_dir() and self.exists(path)

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

    def load(self, path: Path, **_: Any) -> Any:
        if not self.exists(path):
            raise CorruptArtifactError("not a SavedModel directory (no saved_model.pb)",
                                       path=path)
        try:
            return tf.saved_model.load(str(path))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorruptArtifactError(f"could not load the SavedModel: {first}",
                                       path=path) from exc

    def check(self, model: keras.Model, path: Path) -> list[Check]:
        try:
            served = self.load(path)
        except CorruptArtifactError as exc:
            return [Check("load", False, str(exc))]
        checks = [Check("load", True, "restored the serving object")]
        probe = probe_inputs(model)
        if probe is None:
            return checks + [Check("serving outputs", False, "no input shapes to probe with")]
        # The export runs as a graph, where oneDNN fuses ops and may round
        # differently from eager execution (~1 ulp): compare graph with graph.
        expected = tf.function(lambda p: model(p, training=False))(probe)
        # Keras exports one positional argument holding the whole input structure.
        checks.append(compare_outputs("serving outputs", expected, lambda: served.serve(probe)))
        return checks

    def contents(self, path: Path) -> Contents:
        if not self.exists(path):
            raise CorruptArtifactError("not a SavedModel directory (no saved_model.pb)",
                                       path=path)
        prefix = path / "variables" / "variables"
        try:
            listed = tf.train.list_variables(str(prefix))
        except Exception as exc:
            raise CorruptArtifactError(f"unreadable SavedModel variables: {exc}",
                                       path=path) from exc
        reader = tf.train.load_checkpoint(str(prefix))
        dtypes = reader.get_variable_to_dtype_map()
        variables = tuple(
            Variable(name, tuple(int(d) for d in shape), dtypes[name].name)
            for name, shape in listed if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
        )
        versions = {}
        try:
            from tensorflow.core.protobuf import saved_model_pb2

            sm = saved_model_pb2.SavedModel()
            sm.ParseFromString((path / "saved_model.pb").read_bytes())
            if sm.meta_graphs:
                versions["tensorflow"] = sm.meta_graphs[0].meta_info_def.tensorflow_version
        except Exception as exc:
            raise CorruptArtifactError(f"unreadable saved_model.pb: {exc}", path=path) from exc
        return Contents(variables, False, versions)
