"""A factory of hostile files, for tests/test_attacks.py.

Each maker writes one artifact an attacker could hand over (no kerasave manifest:
a manifest would make kerasave refuse any edit as damage, and an attacker simply
leaves it out), built from a real artifact and edited where the attack lives.
Canaries (``Canary``) prove afterwards that nothing ran and nothing outside the
artifact was read.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import kerasave as ks

from .test_shapes import _edit_index, _kernel_key


class Canary:
    """A file outside the artifact: ``written`` says whether anything created it;
    ``secret`` is an existing file whose access time tells whether it was read
    (where the file system records access times at all: ``reads_visible``)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.written = root / "pwned.txt"
        self.secret = root / "secret.txt"
        self.secret.write_text("the victim's secret\n")
        self._stamp()
        self.reads_visible = self._probe()

    def _stamp(self) -> None:
        mtime = os.stat(self.secret).st_mtime
        os.utime(self.secret, (mtime - 1000, mtime))  # atime before mtime: a read moves it

    def _probe(self) -> bool:
        before = os.stat(self.secret).st_atime
        self.secret.read_bytes()
        seen = os.stat(self.secret).st_atime != before
        self._stamp()
        return seen

    def untouched(self) -> bool:
        if self.written.exists():
            return False
        return not self.reads_visible or os.stat(self.secret).st_atime < os.stat(
            self.secret).st_mtime


def unsealed(path: Path) -> Path:
    manifest = (path / "kerasave.json") if path.is_dir() else path.with_name(
        path.name + ".kerasave.json")
    manifest.unlink(missing_ok=True)
    return path


# -- SavedModel ------------------------------------------------------------------------


def tf_program(path: Path, body, signature=None) -> Path:
    """A SavedModel whose ``serve`` runs ``body(x)`` (saved by plain TensorFlow)."""
    signature = signature or (tf.TensorSpec([None, 4], tf.float32),)
    module = tf.Module()
    module.serve = tf.function(body, input_signature=list(signature), autograph=False)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def table_initializer_program(path: Path, canary: Canary) -> Path:
    """A SavedModel holding a lookup table whose initializer writes a file: TensorFlow
    runs resource initializers inside ``tf.saved_model.load`` itself."""

    class WritingInitializer(tf.lookup.KeyValueTensorInitializer):
        def initialize(self, table):
            with tf.control_dependencies([tf.io.write_file(str(canary.written), "pwned")]):
                return super().initialize(table)

    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(
        WritingInitializer(tf.constant(["a"]), tf.constant([1], tf.int64)), -1)
    module.serve = tf.function(lambda x: module.table.lookup(x), autograph=False,
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    canary.written.unlink()  # (creating the table here ran its initializer once)
    return path


def text_table_program(path: Path, vocabulary: Path) -> Path:
    """A SavedModel whose lookup table reads its vocabulary file (an asset) when
    initialized: the op reads whatever file name its input tensor holds."""
    vocabulary.write_text("a\nb\n")
    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        str(vocabulary), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
        tf.lookup.TextFileIndex.LINE_NUMBER), -1)
    module.serve = tf.function(lambda x: module.table.lookup(x), autograph=False,
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def keras_export(path: Path) -> Path:
    """A Keras export of a small Dense model (kerasave's, manifest removed)."""
    model = keras_model()
    ks.save_model(model, path, format="savedmodel")
    return unsealed(path)


def keras_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("adam", "mse")
    return model


def edit_saved_model(path: Path, edit) -> Path:
    """``edit(meta_graph)`` applied to ``saved_model.pb`` in place."""
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    edit(sm.meta_graphs[0])
    (path / "saved_model.pb").write_bytes(sm.SerializeToString())
    return path


def serving_function(meta_graph):
    """The library function that computes the model (the one with a MatMul)."""
    return next(f for f in meta_graph.graph_def.library.function
                if any(n.op == "MatMul" for n in f.node_def))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- checkpoints -----------------------------------------------------------------------


def checkpoint_with(prefix: Path, edit) -> Path:
    """The reference model's checkpoint with ``edit`` applied to its kernel's entry
    in the ``.index`` (a BundleEntryProto)."""
    ks.save_weights(ks.reference_model(seed=0), prefix)
    unsealed(prefix)
    _edit_index(prefix, _kernel_key(prefix), edit)
    return prefix


def set_shape(*dims):
    def edit(entry):
        del entry.shape.dim[:]
        for size in dims:
            entry.shape.dim.add(size=size)
    return edit


def set_dtype(dtype, *dims):
    def edit(entry):
        entry.dtype = dtype
        if dims:
            set_shape(*dims)(entry)
    return edit


# -- configs ---------------------------------------------------------------------------


def reference_config() -> dict:
    return json.loads(ks.to_json(ks.reference_model(seed=0)))


def with_layer(config: dict, index: int, layer: dict) -> dict:
    config["config"]["layers"][index] = layer
    return config


def huge_dense(config: dict, units: int = 2**40) -> dict:
    """The second Dense declares ``units`` outputs: 2**40 × 64 float32 weights."""
    config["config"]["layers"][2]["config"]["units"] = units
    return config


def yaml_alias_bomb(levels: int = 9, width: int = 10) -> str:
    """The "billion laughs": each anchor a list of ``width`` aliases of the one before."""
    lines = ["class_name: Sequential", "config:", "  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def rewrite_keras(src: Path, dst: Path, *, config=None, members=None) -> Path:
    """A copy of the ``.keras`` archive ``src`` with its config replaced by
    ``config(old)`` and ``members`` (name → bytes) added or replaced."""
    members = dict(members or {})
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json" and config is not None:
                data = json.dumps(config(json.loads(data))).encode()
            zout.writestr(item.filename, members.pop(item.filename, data))
        for name, data in members.items():
            zout.writestr(name, data)
    return dst


def legacy_h5_with_config(path: Path, config) -> Path:
    """The reference model as a legacy ``.h5``, its ``model_config`` replaced."""
    ks.reference_model(seed=0).save(path)  # (plain Keras: as a file from elsewhere)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps(config(json.loads(f.attrs["model_config"])))
    return path


def vlen_weights(path: Path) -> Path:
    """A weights file whose kernel is a dataset of variable-length strings."""
    ks.save_weights(ks.reference_model(seed=0), path)
    unsealed(path)
    with h5py.File(path, "r+") as f:
        names = []
        f.visit(names.append)
        kernel = next(n for n in names if isinstance(f[n], h5py.Dataset)
                      and f[n].shape == (32, 64))
        del f[kernel]
        f.create_dataset(kernel, data=np.array(["x" * 64] * 2048, dtype=object),
                         dtype=h5py.string_dtype())
    return path
