"""Keras 2 TF-format artifacts (written by tf-keras 2.21, both optimizer generations)
load into Keras 3 through kerasave, bit for bit (fixtures: tests/fixtures/keras2/)."""

from __future__ import annotations

import numpy as np
import pytest

import kerasave as ks

from .conftest import FIXTURES, all_vars, assert_bit_exact, values
from .keras2_twins import (
    ARTIFACTS,
    assert_restored,
    differs,
    expected,
    subclassed,
    twin,
)

GENERATIONS = {"tf211": "TF 2.11+", "v2": "OptimizerV2"}
WEIGHTS = [(kind, gen, opt) for kind in ("sequential", "functional", "subclassed")
           for gen in GENERATIONS for opt in ("adam", "sgd", "rmsprop")] + [
    ("zoo", gen, "adam") for gen in GENERATIONS]


@pytest.mark.parametrize("kind,gen,opt", WEIGHTS, ids=["-".join(w) for w in WEIGHTS])
def test_keras2_save_weights_checkpoint_loads_with_its_optimizer_state(kind, gen, opt):
    prefix = ARTIFACTS / "weights" / f"{kind}-{gen}-{opt}"
    want = expected(prefix)
    model = twin(kind, opt)
    assert differs(model, want) and not model.optimizer.built
    report = ks.load_weights(model, prefix)
    assert report.ok and report.format == "checkpoint"
    details = " ".join(c.detail for c in report.checks)
    assert "Keras 2 layout" in details and GENERATIONS[gen] in details
    assert_restored(model, want)
    # Training goes on from the saved step.
    before = int(model.optimizer.iterations.numpy())
    x = [want[k] for k in sorted(want) if k.startswith("probe_x")]
    y = model.predict(x if len(x) > 1 else x[0], verbose=0)
    model.train_on_batch(x if len(x) > 1 else x[0], y)
    assert int(model.optimizer.iterations.numpy()) == before + 1


@pytest.mark.parametrize("gen", GENERATIONS)
def test_modelcheckpoint_ckpt_prefix_loads(gen):
    prefix = ARTIFACTS / "modelcheckpoint" / gen / "weights.02.ckpt"
    model = twin("sequential", "adam")
    want = expected(prefix)
    assert differs(model, want)
    ks.load_weights(model, prefix)
    assert_restored(model, want)


@pytest.mark.parametrize("name", ["functional-tf211-sgd", "functional-v2-adam"])
def test_tf_train_checkpoint_of_model_and_optimizer_loads(name):
    prefix = ARTIFACTS / "tfcheckpoint" / name
    model = twin("functional", name.rsplit("-", 1)[1])
    want = expected(prefix)
    assert differs(model, want)
    ks.load_weights(model, prefix)
    assert_restored(model, want)


def test_the_first_issues_keras2_fixture_loads():
    """tests/fixtures/keras2/ckpt/reference: the seed's model.save_weights('...')."""
    from kerasave import reference_model

    model = reference_model()
    want = np.load(FIXTURES / "keras2" / "reference_weights.npz")
    ks.load_weights(model, FIXTURES / "keras2" / "ckpt" / "reference")
    for i, w in enumerate(model.get_weights()):
        assert w.dtype == want[f"w{i}"].dtype and np.array_equal(w, want[f"w{i}"])
    assert int(model.optimizer.iterations.numpy()) == 14  # 2 epochs of 7 batches
    np.testing.assert_allclose(model.predict(want["probe_x"], verbose=0), want["probe_y"],
                               rtol=1e-5, atol=1e-6)


def test_a_keras2_checkpoint_verifies_against_the_model_it_was_loaded_into():
    prefix = ARTIFACTS / "weights" / "subclassed-v2-adam"
    model = twin("subclassed", "adam")
    ks.load_weights(model, prefix)
    assert ks.verify(model, prefix).ok
    model.weights[0].assign(model.weights[0] + 1.0)
    report = ks.verify(model, prefix)
    assert not report.ok


def test_a_keras2_checkpoint_that_does_not_fit_names_both_sides_and_changes_nothing():
    model = twin("sequential", "adam")
    model.optimizer.build(model.trainable_variables)
    before = values(all_vars(model))
    with pytest.raises(ks.ArchitectureMismatchError) as info:
        ks.load_weights(model, ARTIFACTS / "weights" / "functional-tf211-adam")
    text = str(info.value)
    assert "functional-tf211-adam" in text
    assert "does not have" in text and "(8,)" in text  # a saved variable, with its shape
    assert "does not hold" in text  # and a live one
    assert_bit_exact(before, all_vars(model))


def test_a_keras2_optimizer_that_does_not_fit_the_keras3_one_changes_nothing():
    model = twin("sequential", "sgd")  # SGD with momentum: one slot per variable
    model.optimizer.build(model.trainable_variables)
    before = values(all_vars(model))
    with pytest.raises(ks.ArchitectureMismatchError, match="velocity") as info:
        ks.load_weights(model, ARTIFACTS / "weights" / "sequential-v2-adam")
    assert "SGD" in str(info.value)
    assert_bit_exact(before, all_vars(model))


def test_an_unbuilt_subclassed_model_is_refused_with_what_to_do():
    model, _ = subclassed(build=False)
    with pytest.raises(ks.ArchitectureMismatchError, match="not built"):
        ks.load_weights(model, ARTIFACTS / "weights" / "subclassed-tf211-adam")


@pytest.mark.parametrize("gen", GENERATIONS)
def test_inspect_says_keras2_and_the_optimizer_generation(gen):
    found = ks.inspect(ARTIFACTS / "weights" / f"functional-{gen}-rmsprop")
    assert found.format == "checkpoint" and found.has_optimizer
    assert found.versions["keras"].startswith("2")
    assert GENERATIONS[gen] in found.versions["optimizer"]
    assert "Keras 2" in str(found)
    assert any(v.shape == (8,) for v in found.variables)


def _guide_state():
    """The checkpoint guide's objects, fresh, in Keras 3 (the model built)."""
    import keras
    import tensorflow as tf

    from .keras2_twins import Net

    net = Net()
    net(tf.zeros((1, 1)))  # built: Keras 2 checkpoints record no build shapes
    opt = keras.optimizers.Adam(0.1)
    inputs = tf.range(10.)[:, None]
    labels = inputs * 5. + tf.range(5.)[None, :]
    dataset = tf.data.Dataset.from_tensor_slices(dict(x=inputs, y=labels)).repeat().batch(2)
    return net, opt, tf.Variable(1), iter(dataset)


@pytest.mark.parametrize("gen", GENERATIONS)
def test_the_guides_keras2_tf_ckpts_resume_in_keras3(gen, tmp_path):
    import shutil

    import tensorflow as tf

    directory = tmp_path / "tf_ckpts"
    shutil.copytree(ARTIFACTS / f"tf_ckpts-{gen}", directory)
    want = expected(directory / "ckpt-5")
    net, opt, step, iterator = _guide_state()
    manager = ks.CheckpointManager(directory, model=net, optimizer=opt, max_to_keep=3,
                                   step=step, iterator=iterator)
    assert [p.rsplit("/", 1)[1] for p in manager.checkpoints] == ["ckpt-3", "ckpt-4", "ckpt-5"]
    assert differs(net, want)
    assert manager.restore_or_initialize() == str(directory / "ckpt-5")
    assert_restored(net, want, opt=opt)
    assert int(step.numpy()) == int(want["step"]) == 50
    following = next(iterator)  # the iterator goes on where Keras 2's stood
    assert np.array_equal(following["x"].numpy(), want["next_x"])
    assert np.array_equal(following["y"].numpy(), want["next_y"])
    # Later saves continue the numbering, keep three, and TensorFlow sees them too.
    step.assign_add(1)
    assert manager.save() == str(directory / "ckpt-6")
    assert [p.rsplit("/", 1)[1] for p in manager.checkpoints] == ["ckpt-4", "ckpt-5", "ckpt-6"]
    assert not (directory / "ckpt-3.index").exists()
    assert tf.train.latest_checkpoint(str(directory)) == str(directory / "ckpt-6")
    # The guide's own TensorFlow code reads kerasave's checkpoint: the model is
    # written under the name the directory gives it (net).
    net3, opt3, step3, iterator3 = _guide_state()
    tf.train.Checkpoint(step=step3, optimizer=opt3, net=net3, iterator=iterator3).restore(
        tf.train.latest_checkpoint(str(directory)))  # (as the guide restores)
    assert int(step3.numpy()) == 51
    assert_bit_exact(values(net.weights), net3.weights)
    assert int(opt3.iterations.numpy()) == int(opt.iterations.numpy())
    state = tf.train.get_checkpoint_state(str(directory))
    assert [p.rsplit("/", 1)[1] for p in state.all_model_checkpoint_paths] == [
        "ckpt-4", "ckpt-5", "ckpt-6"]
    again, opt2, step2, iterator2 = _guide_state()
    ks.CheckpointManager(directory, model=again, optimizer=opt2, step=step2,
                         iterator=iterator2).restore_or_initialize()
    assert int(step2.numpy()) == 51
    assert_bit_exact(values(net.weights), again.weights)


def test_the_guides_tf_ckpts_written_by_keras3_resume_too(tmp_path):
    """The guide's own loop under Keras 3 (tf.train.CheckpointManager, net= not model=)."""
    import tensorflow as tf

    net, opt, step, iterator = _guide_state()
    ckpt = tf.train.Checkpoint(step=step, optimizer=opt, net=net, iterator=iterator)
    tf_manager = tf.train.CheckpointManager(ckpt, str(tmp_path / "tf_ckpts"), max_to_keep=3)
    for _ in range(19):
        example = next(iterator)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(net(example["x"]) - example["y"]))
        opt.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                net.trainable_variables))
        step.assign_add(1)
        if int(step) % 10 == 0:
            tf_manager.save()
    saved = values(list(net.weights) + list(opt.variables))
    following = next(iterator)
    net2, opt2, step2, iterator2 = _guide_state()
    manager = ks.CheckpointManager(tmp_path / "tf_ckpts", model=net2, optimizer=opt2,
                                   step=step2, iterator=iterator2)
    assert manager.restore_or_initialize().endswith("ckpt-2")
    assert_bit_exact(saved, list(net2.weights) + list(opt2.variables))
    assert int(step2.numpy()) == 20
    assert np.array_equal(next(iterator2)["x"].numpy(), following["x"].numpy())


@pytest.mark.parametrize("gen", GENERATIONS)
def test_load_weights_of_one_checkpoint_of_the_guide_leaves_the_rest_for_the_caller(gen):
    net, opt, _, _ = _guide_state()
    net.compile(optimizer=opt, loss="mae")
    prefix = ARTIFACTS / f"tf_ckpts-{gen}" / "ckpt-5"
    report = ks.load_weights(net, prefix)
    assert_restored(net, expected(prefix))
    left = [c.detail for c in report.checks if c.name == "other objects"]
    assert left == ["left for the caller: iterator, step"]


# -- Keras 2 SavedModel directories (model.save('dir') in tf.keras) -----------------------

SAVEDMODELS = {  # name -> (optimizer class, hyperparameters the training config recorded)
    "sequential-tf211-adam": ("Adam", {"learning_rate": 0.01, "beta_1": 0.9}),
    "functional-v2-rmsprop": ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5,
                                          "centered": True}),
    "functional-tf211-sgd": ("SGD", {"learning_rate": 0.01, "momentum": 0.9}),
    "sequential-v2-sgd": ("SGD", {"learning_rate": 0.01, "momentum": 0.9}),
}


@pytest.mark.parametrize("name", SAVEDMODELS)
def test_a_keras2_savedmodel_loads_as_a_compiled_keras3_model_with_its_state(name):
    import keras

    path = ARTIFACTS / "savedmodel" / name
    model = ks.load_model(path)
    assert isinstance(model, keras.Model) and model.compiled
    cls, hyper = SAVEDMODELS[name]
    assert type(model.optimizer).__name__ == cls
    config = model.optimizer.get_config()
    for key, value in hyper.items():
        assert config[key] == pytest.approx(value), key
    assert_restored(model, expected(path))
    assert ks.verify(model, path).ok
    found = ks.inspect(path)
    assert found.versions["keras"].startswith("2.21") and found.has_optimizer


def test_a_keras2_savedmodel_loads_uncompiled_when_asked_or_saved_so():
    path = ARTIFACTS / "savedmodel" / "sequential-tf211-adam"
    model = ks.load_model(path, compile=False)
    assert getattr(model, "optimizer", None) is None
    assert_restored(model, expected(path), optimizer=False)
    bare = ks.load_model(ARTIFACTS / "savedmodel" / "sequential-uncompiled")
    assert getattr(bare, "optimizer", None) is None and len(bare.weights) == 4
    assert not ks.inspect(ARTIFACTS / "savedmodel" / "sequential-uncompiled").has_optimizer


def test_a_damaged_keras_metadata_is_a_typed_error(tmp_path):
    import shutil

    path = tmp_path / "sm"
    shutil.copytree(ARTIFACTS / "savedmodel" / "sequential-tf211-adam", path)
    data = (path / "keras_metadata.pb").read_bytes()
    (path / "keras_metadata.pb").write_bytes(data[: len(data) // 2])
    with pytest.raises(ks.CorruptArtifactError, match="keras_metadata"):
        ks.load_model(path)


def test_a_keras2_savedmodel_whose_variables_do_not_fit_changes_nothing(tmp_path):
    import shutil

    path = tmp_path / "sm"
    shutil.copytree(ARTIFACTS / "savedmodel" / "sequential-tf211-adam", path)
    shutil.rmtree(path / "variables")
    shutil.copytree(ARTIFACTS / "savedmodel" / "functional-tf211-sgd" / "variables",
                    path / "variables")
    with pytest.raises(ks.ArchitectureMismatchError, match="does not have"):
        ks.load_model(path)


def test_convert_a_keras2_savedmodel_to_a_keras_file_plain_keras_loads(tmp_path, capsys):
    import keras

    from kerasave import cli

    src = ARTIFACTS / "savedmodel" / "functional-v2-rmsprop"
    assert cli.main(["inspect", str(src)]) == 0
    out = capsys.readouterr().out
    assert "Keras 2 whole model" in out and "OptimizerV2" in out
    dst = tmp_path / "model.keras"
    assert cli.main(["convert", str(src), str(dst)]) == 0
    assert "bit-exact" in capsys.readouterr().out
    model = keras.saving.load_model(dst)  # plain Keras 3, no kerasave
    assert_restored(model, expected(src))


@pytest.mark.parametrize("dst", ["w.weights.h5", "m.h5", "ckpt"])
def test_convert_a_keras2_savedmodel_to_the_other_formats(tmp_path, dst, capsys):
    from kerasave import cli

    src = ARTIFACTS / "savedmodel" / "sequential-v2-sgd"
    args = ["convert", str(src), str(tmp_path / dst)] + (["--as", "weights"]
                                                         if dst == "ckpt" else [])
    assert cli.main(args) == 0
    assert "bit-exact" in capsys.readouterr().out
    if dst == "m.h5":
        model = ks.load_model(tmp_path / dst)
    else:  # the same architecture and optimizer, changed, then restored
        model = ks.load_model(src)
        for w in model.weights:
            w.assign(w + 1.0)
        model.optimizer.iterations.assign(0)
        ks.load_weights(model, tmp_path / dst)
    assert_restored(model, expected(src))


def test_convert_a_keras2_checkpoint_with_an_architecture(tmp_path, capsys):
    from kerasave import cli

    arch = twin("functional", "adam")
    arch.optimizer.build(arch.trainable_variables)
    ks.save_model(arch, tmp_path / "arch.keras")
    src = ARTIFACTS / "weights" / "functional-tf211-adam"
    dst = tmp_path / "out.keras"
    assert cli.main(["convert", str(src), str(dst), "--config", str(tmp_path / "arch.keras")]) == 0
    assert "bit-exact" in capsys.readouterr().out
    import keras

    assert_restored(keras.saving.load_model(dst), expected(src))


# -- damage ------------------------------------------------------------------------------

def test_a_graph_with_a_slot_of_a_node_it_lacks_is_corrupt():
    from tensorflow.core.protobuf import trackable_object_graph_pb2 as pb

    from kerasave.formats._tf.graph import read_graph

    graph = pb.TrackableObjectGraph()
    node = graph.nodes.add()
    node.slot_variables.add(original_variable_node_id=0, slot_name="m",
                            slot_variable_node_id=7)

    class Reader:
        def get_tensor(self, key):
            return graph.SerializeToString()

    with pytest.raises(ks.CorruptArtifactError, match="lacks"):
        read_graph(Reader(), "x")


@pytest.mark.parametrize("member", [".index", ".data-00000-of-00001"])
def test_damaged_keras2_checkpoints_raise_typed_errors_and_change_nothing(tmp_path, member):
    import shutil

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    source = ARTIFACTS / "weights" / "subclassed-v2-rmsprop"
    model = twin("subclassed", "rmsprop")
    model.optimizer.build(model.trainable_variables)
    before = values(all_vars(model))
    size = (source.parent / (source.name + member)).stat().st_size

    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(at=st.integers(0, size - 1), value=st.integers(1, 255))
    def damaged(at, value):
        work = tmp_path / f"d{at}"
        work.mkdir(exist_ok=True)
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(source.parent / (source.name + suffix), work / f"c{suffix}")
        path = work / f"c{member}"
        data = bytearray(path.read_bytes())
        data[at] ^= value
        path.write_bytes(bytes(data))
        try:
            ks.load_weights(model, work / "c")
        except ks.KerasaveError:
            assert_bit_exact(before, all_vars(model))
        else:  # (bytes no reader looks at): what loaded is what Keras 2 saved
            assert_restored(model, expected(source))
            for var, value in zip(all_vars(model), before):
                var.assign(value)

    damaged()


@pytest.mark.parametrize("name", ["functional-v2-rmsprop", "sequential-tf211-adam"])
def test_kerasave_verify_passes_a_keras2_savedmodel_and_says_what_it_leaves_out(name, capsys):
    from kerasave import cli

    assert cli.main(["verify", str(ARTIFACTS / "savedmodel" / name)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "Keras 2 whole model" in out
    assert "left out on purpose: Keras 2 metric totals" in out
    assert ("OptimizerV2 hyperparameters" in out) == ("-v2-" in name)


def test_load_weights_reads_a_keras2_savedmodels_variables_into_a_model_built_in_code():
    prefix = ARTIFACTS / "savedmodel" / "functional-v2-rmsprop" / "variables" / "variables"
    model = twin("functional", "rmsprop")
    want = expected(ARTIFACTS / "savedmodel" / "functional-v2-rmsprop")
    assert differs(model, want)
    ks.load_weights(model, prefix)
    assert_restored(model, want)


def test_a_non_strict_restore_of_a_keras2_checkpoint_restores_what_fits(tmp_path):
    import shutil

    import keras
    import tensorflow as tf

    class Wider(keras.Model):  # the guide's Net and one more layer
        def __init__(self):
            super().__init__()
            self.l1 = keras.layers.Dense(5)
            self.l2 = keras.layers.Dense(2)

        def call(self, x):
            return self.l2(self.l1(x))

    shutil.copytree(ARTIFACTS / "tf_ckpts-v2", tmp_path / "tf_ckpts")
    want = expected(tmp_path / "tf_ckpts" / "ckpt-5")
    net = Wider()
    net(tf.zeros((1, 1)))
    extra = values(net.l2.weights)
    manager = ks.CheckpointManager(tmp_path / "tf_ckpts", model=net, step=tf.Variable(1))
    with pytest.raises(ks.ArchitectureMismatchError, match="does not hold") as info:
        manager.restore()
    assert f"{net.l2.kernel.path} (5, 2)" in str(info.value)
    report = manager.restore(strict=False, only=("model", "step"))
    assert np.array_equal(net.l1.kernel.numpy(), want["w0"])
    assert_bit_exact(extra, net.l2.weights)
    assert net.l2.kernel.path in next(c.detail for c in report.checks if c.name == "not matched")


# -- what a pairing by structure must refuse rather than guess ---------------------------

def _towers():
    import keras

    def tower(name):
        x = keras.Input((4,))
        return keras.Model(x, keras.layers.Dense(4, name="proj")(x), name=name)

    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Add()([tower("a")(x), tower("b")(x)]))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_slots_whose_names_do_not_say_whose_they_are_are_refused_not_guessed(tmp_path):
    """Two saved layers named proj: Keras 2's TF 2.11+ slot names cannot tell them apart."""
    import shutil

    prefix = ARTIFACTS / "hazards" / "same-names"
    model = _towers()
    before = values(all_vars(model))
    with pytest.raises(ks.ArchitectureMismatchError, match="proj"):
        ks.load_weights(model, prefix)
    assert_bit_exact(before, all_vars(model))
    # Non-strict: the model's weights (placed by structure) load; no slot is guessed.
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(f"{prefix}{suffix}", tmp_path / f"ckpt-1{suffix}")
    ks.CheckpointManager(tmp_path, model=model).restore(strict=False)
    want = expected(prefix)
    for i, w in enumerate(model.weights):
        assert np.array_equal(w.numpy(), want[f"w{i}"])
    slots = [v for v in model.optimizer.variables if "proj" in v.path]
    assert slots and all(not np.any(v.numpy()) for v in slots)  # all still zero


def test_layers_keras2_counted_and_keras3_does_not_shift_nothing(tmp_path):
    """Keras 2 counted a StringLookup among the layers with weights; Keras 3 does not."""
    import shutil

    import keras

    look = keras.layers.StringLookup(vocabulary=["cat", "dog", "eel"])
    x = keras.Input((1,), dtype="string")
    h = keras.layers.CategoryEncoding(num_tokens=4, output_mode="one_hot")(look(x))
    h = keras.layers.Dense(4, name="da")(keras.layers.Dense(4, name="db")(h))
    model = keras.Model(x, keras.layers.Dense(4, name="dc")(h))
    before = values(model.weights)
    prefix = ARTIFACTS / "hazards" / "lookup"
    with pytest.raises(ks.ArchitectureMismatchError):
        ks.load_weights(model, prefix)
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(f"{prefix}{suffix}", tmp_path / f"ckpt-1{suffix}")
    ks.CheckpointManager(tmp_path, model=model).restore(strict=False)
    assert_bit_exact(before, model.weights)  # nothing placed by a shifted position


def test_a_kerasave_checkpoint_is_never_paired_the_keras2_way(tmp_path):
    """A Keras 3 checkpoint of Adam state does not load into an SGD model by
    dropping the optimizer's state (as a Keras 2 pairing of the model alone would)."""
    import keras

    model = twin("sequential", "adam")
    model.fit(np.zeros((8, 6), "float32"), np.zeros((8, 3), "float32"), verbose=0)
    ks.save_weights(model, tmp_path / "ckpt")
    other = twin("sequential", "sgd")
    other.optimizer.build(other.trainable_variables)
    before = values(all_vars(other))
    with pytest.raises(ks.ArchitectureMismatchError):
        ks.load_weights(other, tmp_path / "ckpt")
    assert_bit_exact(before, all_vars(other))
    assert not ks.verify(other, tmp_path / "ckpt").ok
    del keras


def test_a_failed_load_of_a_foreign_checkpoint_leaves_the_optimizer_unbuilt():
    model = twin("sequential", "adam")
    with pytest.raises(ks.ArchitectureMismatchError):
        ks.load_weights(model, ARTIFACTS / "weights" / "functional-tf211-adam")
    assert not model.optimizer.built


def test_a_deep_object_graph_is_walked_without_recursion():
    from tensorflow.core.protobuf import trackable_object_graph_pb2 as pb

    from kerasave.formats._tf.graph import ObjectGraph

    graph = pb.TrackableObjectGraph()
    for i in range(5000):
        node = graph.nodes.add()
        node.children.add(node_id=i + 1, local_name="inner")
    graph.nodes.add().attributes.add(name="VARIABLE_VALUE", checkpoint_key="k")
    from kerasave.formats._tf import protowire as _protowire

    parsed = ObjectGraph(_protowire.trackable_object_graph(graph.SerializeToString()))
    assert parsed.holds_values(0)


def test_a_reader_failure_inside_a_restore_is_a_typed_error(tmp_path, monkeypatch):
    """What TensorFlow's reader raises about the files is damage (CorruptArtifactError);
    a failure of kerasave's own code is a bug, raised as it is, never taken for damage."""
    import shutil

    import tensorflow as tf

    from kerasave.formats import checkpoint

    shutil.copytree(ARTIFACTS / "tf_ckpts-v2", tmp_path / "tf_ckpts")
    net, opt, step, iterator = _guide_state()
    before = values(all_vars(net))
    manager = ks.CheckpointManager(tmp_path / "tf_ckpts", model=net, optimizer=opt,
                                   step=step, iterator=iterator)

    def unreadable(prefix, reader, **_):
        def read(key):
            raise tf.errors.DataLossError(None, None, "Checksum does not match")
        return read

    monkeypatch.setattr(checkpoint, "tensor_loader", unreadable)
    with pytest.raises(ks.CorruptArtifactError, match="Checksum does not match"):
        manager.restore()
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise AttributeError("a pairing surprised by the file")

    monkeypatch.setattr(checkpoint, "pair_checkpoint", broken)
    with pytest.raises(AttributeError, match="surprised") as caught:
        manager.restore()
    assert not isinstance(caught.value, ks.KerasaveError)
    with pytest.raises(ValueError, match="nothing named"):
        manager.restore(only=("nonesuch",))
    assert_bit_exact(before, all_vars(net))  # nothing was restored by either


# -- legacy .h5 whole models Keras 2 wrote -----------------------------------------------

@pytest.mark.parametrize("name", ["sequential-tf211-adam", "sequential-v2-adam",
                                  "functional-tf211-rmsprop", "functional-v2-sgd"])
def test_a_keras2_h5_model_loads_with_its_optimizer_state(name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "fresh optimizer" warning
        model = ks.load_model(ARTIFACTS / "h5" / f"{name}.h5")
    assert_restored(model, expected(ARTIFACTS / "h5" / name))
