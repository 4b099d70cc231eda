"""The corpus: models re-expressed from Keras' own test suite.

Every case names where in Keras' tests (3.15, ``keras/src/...``) its model comes
from. A case's ``build(seed)`` returns the model as the test had it just before
saving (compiled and trained one step where the test trains it); the same seed
gives the same model. ``inputs()`` is a batch to compare predictions on (None
for an unbuilt model: calling it would build it). Keras features the oldest
supported stack lacks are skipped by feature detection (``needs``).

Custom classes are registered under the package ``corpus`` (Keras' tests use
``my_custom_package`` and others; the names are kept). Classes the Keras test
does not register are passed as ``custom_objects``, which both kerasave and
Keras are given through ``keras.saving.custom_object_scope`` for the save and
the load, as a user would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import layers, ops

__all__ = ["Case", "CASES", "case_ids"]

_HERE = "keras/src/"


@dataclass(frozen=True)
class Case:
    """One model of the corpus."""

    name: str
    source: str  # where in Keras' tests, e.g. "saving/saving_lib_test.py::test_x"
    build: Callable[[int], keras.Model]
    inputs: Callable[[], Any] | None
    custom_objects: dict[str, Any] = field(default_factory=dict)
    needs: Callable[[], str | None] | None = None  # why it cannot run here, or None
    slow: bool = False
    note: str = ""  # what is special about it, in words (for the docs table)

    def skip_reason(self) -> str | None:
        return self.needs() if self.needs is not None else None


CASES: dict[str, Case] = {}


def case(source: str, *, inputs: Callable[[], Any] | None, custom_objects: Any = None,
         needs: Callable[[], str | None] | None = None, slow: bool = False,
         note: str = "") -> Callable[[Callable[[int], keras.Model]], Callable[[int], keras.Model]]:
    def register(build: Callable[[int], keras.Model]) -> Callable[[int], keras.Model]:
        name = build.__name__
        assert name not in CASES, name
        CASES[name] = Case(name, source, build, inputs, dict(custom_objects or {}), needs,
                           slow, note)
        return build

    return register


def case_ids() -> list[str]:
    return list(CASES)


# -- helpers ---------------------------------------------------------------------------

def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def _floats(*shape: int, seed: int = 7) -> np.ndarray:
    return _rng(seed).random(shape, dtype=np.float32)


def train_step(model: keras.Model, x: Any, y: Any) -> None:
    """One eager training step (loss, gradients, optimizer, compiled metrics): what
    ``fit`` does to the state, without tracing a function (a tenth of the time)."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred)
        scaled = model.optimizer.scale_loss(loss) if hasattr(
            model.optimizer, "scale_loss") else loss
    variables = model.trainable_variables
    grads = tape.gradient(scaled, variables)
    model.optimizer.apply(grads, variables)
    model.compute_metrics(x, y, y_pred)


def _has(obj: Any, name: str, what: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if hasattr(obj, name) else f"Keras {keras.__version__} has no {what}"

    return check


def _keras_src(module: str, name: str, what: str) -> Callable[[], str | None]:
    def check() -> str | None:
        import importlib

        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return f"Keras {keras.__version__} has no {what}"
        return None

    return check


# -- saving/saving_lib_test.py -----------------------------------------------------------

@keras.saving.register_keras_serializable(package="corpus")
class MyDense(layers.Layer):
    """saving_lib_test.MyDense: a nested Dense and weights in a list and a dict."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.nested_layer = layers.Dense(self.units, name="dense")

    def build(self, input_shape):
        self.additional_weights = [
            self.add_weight(shape=(), name="my_additional_weight", initializer="ones",
                            trainable=True),
            self.add_weight(shape=(), name="my_additional_weight_2", initializer="ones",
                            trainable=True),
        ]
        self.weights_in_dict = {"my_weight": self.add_weight(
            shape=(), name="my_dict_weight", initializer="ones", trainable=True)}
        self.nested_layer.build(input_shape)

    def call(self, inputs):
        return self.nested_layer(inputs)


ASSETS_DATA = "These are my assets"
VARIABLES_DATA = np.random.default_rng(3).random((10,))


@keras.saving.register_keras_serializable(package="corpus")
class LayerWithCustomSaving(MyDense):
    """saving_lib_test.LayerWithCustomSaving: assets and its own variables."""

    def build(self, input_shape):
        self.assets = ASSETS_DATA
        self.stored_variables = VARIABLES_DATA
        return super().build(input_shape)

    def save_assets(self, inner_path):
        with open(os.path.join(inner_path, "assets.txt"), "w") as f:
            f.write(self.assets)

    def save_own_variables(self, store):
        store["variables"] = self.stored_variables

    def load_assets(self, inner_path):
        with open(os.path.join(inner_path, "assets.txt")) as f:
            self.assets = f.read()

    def load_own_variables(self, store):
        self.stored_variables = np.array(store["variables"])


@keras.saving.register_keras_serializable(package="corpus")
class CustomModelX(keras.Model):
    """saving_lib_test.CustomModelX: subclassed, registered, Keras' automatic config."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dense1 = MyDense(1, name="my_dense_1")
        self.dense2 = MyDense(1, name="my_dense_2")

    def call(self, inputs):
        return self.dense2(self.dense1(inputs))


@keras.saving.register_keras_serializable(package="corpus")
class ModelWithCustomSaving(keras.Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.custom_dense = LayerWithCustomSaving(1)

    def call(self, inputs):
        return self.custom_dense(inputs)


@keras.saving.register_keras_serializable(package="corpus")
class CompileOverridingModel(keras.Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dense1 = MyDense(1)

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)

    def call(self, inputs):
        return self.dense1(inputs)


@keras.saving.register_keras_serializable(package="corpus")
class CompileOverridingSequential(keras.Sequential):
    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)


@keras.saving.register_keras_serializable(package="corpus")
class SubclassFunctional(keras.Model):
    """Subclassed functional identical to ``_get_basic_functional_model``."""

    def __init__(self, **kwargs):
        inputs = keras.Input(shape=(4,), batch_size=2)
        dense = layers.Dense(1, name="first_dense")
        x = dense(inputs)
        outputs = layers.Dense(1, name="second_dense")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.layer_attr = dense

    @property
    def layer_property(self):
        return self.layer_attr

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="corpus")
def my_mean_squared_error(y_true, y_pred):
    """Identical to built-in ``mean_squared_error``, but as a custom fn."""
    return ops.mean(ops.square(y_pred - y_true), axis=-1)


def _compile_like_saving_lib(model: keras.Model) -> None:
    model.compile(optimizer="adam", loss=my_mean_squared_error,
                  metrics=[keras.metrics.Hinge(), "mse"])


def _x24() -> np.ndarray:
    return _floats(2, 4)


def _trained(model: keras.Model, x: Any = None, y: Any = None) -> keras.Model:
    x = _x24() if x is None else x
    y = _floats(2, 1, seed=8) if y is None else y
    train_step(model, x, y)
    return model


_SL = _HERE + "saving/saving_lib_test.py::"


@case(_SL + "test_compile_preserved (basic_sequential)", inputs=_x24)
def basic_sequential(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([layers.Dense(1, name="dense_1"), layers.Dense(1, name="dense_2")],
                             name="sequential")
    _compile_like_saving_lib(model)
    return _trained(model)


@case(_SL + "test_compile_preserved (basic_functional)", inputs=_x24)
def basic_functional(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(4,), batch_size=2)
    x = layers.Dense(1, name="first_dense")(inputs)
    model = keras.Model(inputs, layers.Dense(1, name="second_dense")(x))
    _compile_like_saving_lib(model)
    return _trained(model)


@case(_SL + "test_compile_preserved (custom_sequential)", inputs=_x24)
def custom_sequential(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([MyDense(1), MyDense(1)], name="sequential")
    _compile_like_saving_lib(model)
    return _trained(model)


@case(_SL + "test_compile_preserved (custom_functional)", inputs=_x24)
def custom_functional(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(4,), batch_size=2)
    x = MyDense(1, name="first_dense")(inputs)
    model = keras.Model(inputs, MyDense(1, name="second_dense")(x))
    _compile_like_saving_lib(model)
    return _trained(model)


@case(_SL + "test_compile_preserved (subclassed)", inputs=_x24,
      note="subclassed, registered, Keras' automatic get_config")
def subclassed(seed):
    keras.utils.set_random_seed(seed)
    model = CustomModelX(name="custom_model_x")
    _compile_like_saving_lib(model)
    return _trained(model)


@case(_SL + "test_inference_after_instantiation (subclassed, not compiled)", inputs=_x24,
      note="subclassed, registered, built by a call, not compiled")
def subclassed_uncompiled(seed):
    keras.utils.set_random_seed(seed)
    model = CustomModelX(name="custom_model_x")
    model(_x24())
    return model


@case(_SL + "test_compile_preserved (subclassed_functional)", inputs=_x24)
def subclassed_functional(seed):
    keras.utils.set_random_seed(seed)
    model = SubclassFunctional()
    _compile_like_saving_lib(model)
    return _trained(model)


@case(_SL + "test_saving_preserve_unbuilt_state", inputs=None, note="unbuilt")
def unbuilt_subclassed(seed):
    keras.utils.set_random_seed(seed)
    return CustomModelX()


@case(_SL + "test_saving_custom_assets_and_variables", inputs=lambda: _floats(4, 32),
      note="a layer's own save_own_variables state and assets")
def custom_assets_and_variables(seed):
    keras.utils.set_random_seed(seed)
    model = ModelWithCustomSaving()
    model.compile(optimizer="adam", loss="mse")
    return _trained(model, _floats(4, 32), _floats(4, 1, seed=8))


@case(_SL + "test_compile_overridden_warnings_subclassed", inputs=_x24,
      note="overrides compile()")
def compile_overriding_model(seed):
    keras.utils.set_random_seed(seed)
    model = CompileOverridingModel()
    model.compile("sgd", "mse")
    return _trained(model)


@case(_SL + "test_compile_overridden_warnings_sequential", inputs=None,
      note="overrides compile(); unbuilt")
def compile_overriding_sequential(seed):
    keras.utils.set_random_seed(seed)
    model = CompileOverridingSequential([layers.Embedding(4, 1), MyDense(1), MyDense(1)])
    model.compile("sgd", "mse")
    return model


@case(_SL + "test_normalization_kpl (with adapt)", inputs=lambda: _floats(3, 3, seed=4))
def normalization_adapted(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(3,)), layers.Normalization()])
    model.layers[0].adapt(_floats(3, 3, seed=4))
    return model


@case(_SL + "test_normalization_kpl (mean and variance given)",
      inputs=lambda: _floats(3, 3, seed=4))
def normalization_given(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape=(3,)), layers.Normalization(
        mean=_floats(3, seed=5), variance=_floats(3, seed=6))])


@case(_SL + "test_normalization_legacy_h5_format", inputs=lambda: _floats(1, 32, seed=4))
def normalization_functional(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32,))
    normalization = layers.Normalization()
    model = keras.Model(inputs, normalization(inputs))
    normalization.adapt(_floats(1, 32, seed=4))
    return model


@case(_SL + "test_legacy_h5_format", inputs=lambda: _floats(1, 32, seed=4),
      note="a subclassed model inside a functional one")
def functional_with_subclassed(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32,))
    x = MyDense(2)(inputs)
    return keras.Model(inputs, CustomModelX()(x))


@case(_SL + "test_nested_functional_model_saving",
      inputs=lambda: [_floats(2, 4), _floats(2, 4, seed=8)])
def nested_functional(seed):
    keras.utils.set_random_seed(seed)

    def func(out_size, name):
        inputs = keras.Input(shape=(4,))
        return keras.Model(inputs, layers.Dense(out_size)(inputs), name=name)

    a, b = keras.Input((4,)), keras.Input((4,))
    return keras.Model([a, b], [func(2, "func_a")(a), func(3, "func_b")(b)])


@case(_SL + "test_nested_shared_functional_model_saving",
      inputs=lambda: [_floats(2, 4), _floats(2, 4, seed=8)])
def nested_shared_functional(seed):
    keras.utils.set_random_seed(seed)
    inputs = [keras.Input((4,)), keras.Input((4,))]
    inner = keras.Input(shape=(4,))
    shared = keras.Model(inner, layers.Dense(4)(inner), name="func_shared")
    out_a = layers.Dense(2)(shared(inputs[0]))
    out_b = layers.Dense(2)(shared(inputs[1]))
    return keras.Model(inputs, [out_a, out_b])


@case(_SL + "test_bidirectional_lstm_saving", inputs=lambda: _floats(1, 3, 2))
def bidirectional_lstm(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3, 2))
    return keras.Model(inputs, layers.Bidirectional(layers.LSTM(8))(inputs))


@keras.saving.register_keras_serializable(package="corpus")
class NestedListModel(keras.Model):
    """test_nested_container_layer_saving (list): layers in nested lists."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [[layers.Dense(8), layers.Dense(8)], [layers.Dense(8), layers.Dense(8)]]
        self.out_layer = layers.Dense(2)

    def call(self, x):
        for block in self.blocks:
            for layer in block:
                x = layer(x)
        return self.out_layer(x)

    def get_config(self):
        return super().get_config()


@keras.saving.register_keras_serializable(package="corpus")
class NestedDictModel(keras.Model):
    """test_nested_container_layer_saving (dict): layers in a dict of lists."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = {"block_a": [layers.Dense(8), layers.Dense(8)],
                       "block_b": [layers.Dense(8), layers.Dense(8)]}
        self.out_layer = layers.Dense(2)

    def call(self, x):
        for block in self.blocks.values():
            for layer in block:
                x = layer(x)
        return self.out_layer(x)

    def get_config(self):
        return super().get_config()


@keras.saving.register_keras_serializable(package="corpus")
class DeeplyNestedModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [[[layers.Dense(4), layers.Dense(4)]]]
        self.out_layer = layers.Dense(2)

    def call(self, x):
        for block_list in self.blocks:
            for block in block_list:
                for layer in block:
                    x = layer(x)
        return self.out_layer(x)

    def get_config(self):
        return super().get_config()


@keras.saving.register_keras_serializable(package="corpus")
class CyclicContainerModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = []
        self.blocks.append(self.blocks)
        self.out = layers.Dense(2)

    def call(self, x):
        return self.out(x)

    def get_config(self):
        return super().get_config()


def _called(model: keras.Model) -> keras.Model:
    model(_x24())
    return model


@case(_SL + "test_nested_container_layer_saving (list)", inputs=_x24,
      note="subclassed, registered, Keras' automatic get_config")
def nested_container_list(seed):
    keras.utils.set_random_seed(seed)
    return _called(NestedListModel())


@case(_SL + "test_nested_container_layer_saving (dict)", inputs=_x24,
      note="subclassed, registered, Keras' automatic get_config")
def nested_container_dict(seed):
    keras.utils.set_random_seed(seed)
    return _called(NestedDictModel())


@case(_SL + "test_deeply_nested_container_layer_saving", inputs=_x24)
def deeply_nested_container(seed):
    keras.utils.set_random_seed(seed)
    return _called(DeeplyNestedModel())


@case(_SL + "test_cyclic_container_saving", inputs=_x24)
def cyclic_container(seed):
    keras.utils.set_random_seed(seed)
    return _called(CyclicContainerModel())


class NormalModel(keras.Model):
    """test_redefinition_of_trackable: subclassed, not registered, no config."""

    def __init__(self):
        super().__init__()
        self.dense = layers.Dense(3)

    def call(self, x):
        return self.dense(x)


@case(_SL + "test_redefinition_of_trackable", inputs=lambda: _floats(2, 2),
      note="subclassed, not registered: weights only")
def unregistered_subclassed(seed):
    keras.utils.set_random_seed(seed)
    model = NormalModel()
    model(_floats(2, 2))
    return model


@case(_SL + "test_fresh_save_load_emits_no_container_skip_warning",
      inputs=lambda: _floats(2, 5))
def einsum_dense(seed):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(5,))
    return keras.Model(inp, layers.EinsumDense("ab,bc->ac", output_shape=(7,))(inp))


@keras.saving.register_keras_serializable(package="corpus")
class GrowthFactor:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return {"factor": self.factor}


@keras.saving.register_keras_serializable(package="corpus")
class FactorLayer(layers.Layer):
    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {"factor": self.factor}


@keras.saving.register_keras_serializable(package="corpus")
class ComplexModel(layers.Layer):
    """A layer whose config holds layers it does not deserialize itself."""

    def __init__(self, first_layer, second_layer=None, **kwargs):
        super().__init__(**kwargs)
        self.first_layer = first_layer
        self.second_layer = second_layer if second_layer is not None else layers.Dense(8)

    def get_config(self):
        config = super().get_config()
        config.update({"first_layer": self.first_layer, "second_layer": self.second_layer})
        return config

    def call(self, inputs):
        return self.first_layer(self.second_layer(inputs))


@case(_SL + "test_custom_object_without_from_config", inputs=lambda: _floats(2, 4, 4),
      note="an activation object without from_config: Keras cannot load it")
def object_without_from_config(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(4, 4))
    return keras.Model(inputs, layers.Dense(1, activation=GrowthFactor(0.5))(inputs))


@case(_SL + "test_complex_model_without_explicit_deserialization",
      inputs=lambda: _floats(2, 32), note="a config Keras cannot deserialize")
def complex_without_deserialization(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32,))
    return keras.Model(inputs, ComplexModel(first_layer=FactorLayer(0.5))(inputs))


@case(_SL + "test_safe_mode", inputs=lambda: _floats(2, 3), note="a Lambda layer")
def lambda_layer(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(shape=(3,)), layers.Lambda(lambda x: x * 2)])


# -- saving/serialization_lib_test.py --------------------------------------------------------

_SER = _HERE + "saving/serialization_lib_test.py::"


def custom_fn(x):
    return x**2


class WrapperLayer(layers.Wrapper):
    def call(self, x):
        return self.layer(x)


class PlainFunctionalSubclass(keras.Model):
    pass


class FunctionalSubclassWCustomInit(keras.Model):
    def __init__(self, num_units=2):
        inputs = keras.Input((2,), batch_size=3)
        outputs = layers.Dense(num_units)(inputs)
        super().__init__(inputs, outputs)
        self.num_units = num_units

    def get_config(self):
        return {"num_units": self.num_units}


@keras.saving.register_keras_serializable(package="corpus")
class SerMyDense(layers.Layer):
    """serialization_lib_test.MyDense: regularizer and initializer in its config."""

    def __init__(self, units, *, kernel_regularizer=None, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self._units = units
        self._kernel_regularizer = kernel_regularizer
        self._kernel_initializer = kernel_initializer

    def get_config(self):
        return dict(units=self._units, kernel_initializer=self._kernel_initializer,
                    kernel_regularizer=self._kernel_regularizer, **super().get_config())

    def build(self, input_shape):
        _, input_units = input_shape
        self._kernel = self.add_weight(name="kernel", shape=[input_units, self._units],
                                       dtype="float32", regularizer=self._kernel_regularizer,
                                       initializer=self._kernel_initializer)

    def call(self, inputs):
        return ops.matmul(inputs, self._kernel)


@keras.saving.register_keras_serializable(package="corpus")
class SerMyWrapper(layers.Layer):
    def __init__(self, wrapped, **kwargs):
        super().__init__(**kwargs)
        self._wrapped = wrapped

    def get_config(self):
        return dict(wrapped=self._wrapped, **super().get_config())

    @classmethod
    def from_config(cls, config):
        config["wrapped"] = keras.saving.deserialize_keras_object(config["wrapped"])
        return cls(**config)

    def call(self, inputs):
        return self._wrapped(inputs)


@case(_SER + "test_dict_inputs_outputs",
      inputs=lambda: {"foo": _floats(2, 2), "bar": _floats(2, 2, seed=8)},
      note="dict inputs and outputs, one shared layer")
def dict_inputs_outputs(seed):
    keras.utils.set_random_seed(seed)
    input_foo = keras.Input((2,), name="foo")
    input_bar = keras.Input((2,), name="bar")
    dense = layers.Dense(1)
    return keras.Model({"foo": input_foo, "bar": input_bar},
                       {"foo": dense(input_foo), "bar": dense(input_bar)})


@case(_SER + "test_shared_inner_layer", inputs=lambda: [_floats(2, 2), _floats(2, 2, seed=8)],
      custom_objects={"WrapperLayer": WrapperLayer},
      note="a layer shared with a wrapper; class given as custom_objects")
def shared_inner_layer(seed):
    keras.utils.set_random_seed(seed)
    input_1, input_2 = keras.Input((2,)), keras.Input((2,))
    shared_layer = layers.Dense(1)
    return keras.Model([input_1, input_2],
                       [shared_layer(input_1), WrapperLayer(shared_layer)(input_2)])


@case(_SER + "test_functional_subclass (plain)", inputs=lambda: _floats(3, 2),
      custom_objects={"PlainFunctionalSubclass": PlainFunctionalSubclass})
def functional_subclass_plain(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((2,), batch_size=3)
    return PlainFunctionalSubclass(inputs, layers.Dense(1)(inputs))


@case(_SER + "test_functional_subclass (custom __init__)", inputs=lambda: _floats(3, 2),
      custom_objects={"FunctionalSubclassWCustomInit": FunctionalSubclassWCustomInit})
def functional_subclass_custom_init(seed):
    keras.utils.set_random_seed(seed)
    return FunctionalSubclassWCustomInit(num_units=3)


@case(_SER + "test_layer_sharing", inputs=lambda: [_floats(2, 3)])
def layer_sharing(seed):
    keras.utils.set_random_seed(seed)
    seq = keras.Sequential([keras.Input(shape=(3,)), layers.Dense(5), layers.Softmax()])
    return keras.Model(inputs=seq.inputs, outputs=seq.outputs)


@case(_SER + "test_layer_instance_as_activation", inputs=lambda: _floats(2, 8))
def layer_as_activation(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)),
                             layers.Dense(4, activation=layers.ReLU(name="my_relu"))])


@case(_SER + "test_layer_instance_with_config_as_activation",
      inputs=lambda: _floats(2, 10, 4))
def conv_leaky_activation(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((10, 4)), layers.Conv1D(
        2, 3, activation=layers.LeakyReLU(negative_slope=0.15, name="my_leaky"))])


@case(_SER + "MyDense and MyWrapper (test_nested_serialization)", inputs=lambda: _floats(2, 3))
def wrapped_custom_dense(seed):
    keras.utils.set_random_seed(seed)
    inner = SerMyDense(2, kernel_regularizer="l2", kernel_initializer="ones")
    return keras.Sequential([keras.Input((3,)), SerMyWrapper(inner)])


# -- legacy/saving/legacy_h5_format_test.py ---------------------------------------------------

_LH = _HERE + "legacy/saving/legacy_h5_format_test.py::"


@case(_LH + "get_sequential_model", inputs=lambda: _floats(2, 3))
def legacy_sequential_bn(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        layers.Input((3,), batch_size=2), layers.Dense(4, activation="relu"),
        layers.BatchNormalization(moving_mean_initializer="uniform",
                                  gamma_initializer="uniform"),
        layers.Dense(5, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    return _trained(model, _floats(2, 3), np.eye(5, dtype="float32")[[1, 3]])


@case(_LH + "get_functional_model", inputs=lambda: _floats(2, 3))
def legacy_functional_residual(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,), batch_size=2)
    x = layers.Dense(4, activation="relu")(inputs)
    residual = x
    x = layers.BatchNormalization(moving_mean_initializer="uniform",
                                  gamma_initializer="uniform")(x)
    x = layers.Dense(4, activation="relu")(x)
    x = layers.add([x, residual])
    model = keras.Model(inputs, layers.Dense(5, activation="softmax")(x))
    model.compile("rmsprop", "mse")
    return _trained(model, _floats(2, 3), _floats(2, 5, seed=8))


class LegacyMyModel(keras.Model):
    """legacy_h5_format_test.get_subclassed_model: a weight of the model itself."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense_1 = layers.Dense(3, activation="relu")
        self.dense_2 = layers.Dense(1, activation="sigmoid")
        self.bias = self.add_weight(name="bias", shape=[1], trainable=True,
                                    initializer=keras.initializers.Zeros())

    def call(self, x):
        return self.dense_2(self.dense_1(x)) + ops.cast(self.bias, "float32")


@case(_LH + "get_subclassed_model", inputs=lambda: _floats(2, 3),
      note="subclassed, not registered, a top-level weight")
def legacy_subclassed(seed):
    keras.utils.set_random_seed(seed)
    model = LegacyMyModel()
    model(_floats(2, 3))
    return model


@case(_LH + "test_compiled_model_with_various_layers", inputs=lambda: _floats(1, 3))
def repeat_time_distributed(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2), layers.RepeatVector(3),
                              layers.TimeDistributed(layers.Dense(3))])
    model.compile(optimizer="rmsprop", loss="mean_squared_error")
    return _trained(model, _floats(1, 3), _floats(1, 3, 3, seed=8))


@case(_LH + "test_saving_include_optimizer_false", inputs=lambda: _floats(4, 10))
def adam_trained(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((10,)), layers.Dense(1)])
    model.compile("adam", loss="mean_squared_error")
    return _trained(model, _floats(4, 10), _floats(4, 1, seed=8))


@keras.saving.register_keras_serializable(package="corpus")
class RegisteredDense(layers.Dense):
    """test_custom_sequential_registered_no_scope: a registered Dense subclass."""

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)


@case(_LH + "test_custom_sequential_registered_no_scope", inputs=lambda: np.array(
    [[5.0]], dtype="float32"))
def registered_dense_sequential(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([layers.Input(shape=[1]), RegisteredDense(1)])


@case(_LH + "test_custom_functional_registered_no_scope", inputs=lambda: np.array(
    [[5.0]], dtype="float32"))
def registered_dense_functional(seed):
    keras.utils.set_random_seed(seed)
    inputs = layers.Input(shape=[1])
    return keras.Model(inputs, RegisteredDense(1)(inputs))


def legacy_custom_fn(x):
    return x * 2.0


class CallsCustomFn(layers.Dense):
    def call(self, inputs):
        return legacy_custom_fn(super().call(inputs))


@case(_LH + "test_custom_function_from_custom_objects_no_registration",
      inputs=lambda: np.array([[5.0]], dtype="float32"),
      custom_objects={"CallsCustomFn": CallsCustomFn, "legacy_custom_fn": legacy_custom_fn})
def custom_objects_no_registration(seed):
    keras.utils.set_random_seed(seed)
    inputs = layers.Input(shape=[1])
    return keras.Model(inputs, CallsCustomFn(1, name="my_dense")(inputs))


class Sublayers(layers.Layer):
    def __init__(self, sublayers, **kwargs):
        super().__init__(**kwargs)
        self.sublayers = sublayers

    def call(self, x):
        for layer in self.sublayers:
            x = layer(x)
        return x

    def get_config(self):
        config = super().get_config()
        config["sublayers"] = keras.saving.serialize_keras_object(self.sublayers)
        return config

    @classmethod
    def from_config(cls, config):
        config["sublayers"] = keras.saving.deserialize_keras_object(config["sublayers"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="corpus")
class RegisteredSubLayer(layers.Layer):
    def call(self, x):  # (the Keras test never calls it)
        return x


@case(_LH + "test_nested_layers", inputs=lambda: _floats(2, 3),
      custom_objects={"Sublayers": Sublayers})
def nested_layers(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), Sublayers(
        [layers.Dense(2, name="MyDense"), RegisteredSubLayer(name="MySubLayer")])])


@case(_LH + "test_model_loading_with_axis_arg",
      inputs=lambda: [_floats(2, 1, 4), _floats(2, 1, 4, seed=8)])
def concatenate_axis(seed):
    keras.utils.set_random_seed(seed)
    input1 = layers.Input(shape=(1, 4), name="input1")
    input2 = layers.Input(shape=(1, 4), name="input2")
    concat = layers.Concatenate(axis=1)([input1, input2])
    model = keras.Model([input1, input2], layers.Dense(1, activation="sigmoid")(concat))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return _trained(model, [_floats(2, 1, 4), _floats(2, 1, 4, seed=8)],
                    np.ones((2, 2, 1), "float32"))


# -- saving/saving_api_test.py ---------------------------------------------------------------

_API = _HERE + "saving/saving_api_test.py::"


@case(_API + "test_basic_load (float16)", inputs=lambda: _floats(2, 3))
def float16_dense(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), layers.Dense(2, dtype="float16")])


@case(_API + "test_load_weights (bfloat16)", inputs=lambda: _floats(2, 3))
def bfloat16_dense(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2, dtype="bfloat16")])
    model.compile("adam", "mse")
    return _trained(model, _floats(2, 3), _floats(2, 2, seed=8))


# -- layers/preprocessing ----------------------------------------------------------------------

_PP = _HERE + "layers/preprocessing/"
_WORDS = np.array(["one", "one", "one", "two", "two", "three"])


@case(_PP + "index_lookup_test.py::test_saving (StringLookup, adapted)",
      inputs=lambda: np.array([["one", "two", "four"]]),
      note="string inputs; vocabulary from adapt")
def string_lookup_adapted(seed):
    layer = layers.StringLookup(max_tokens=7, num_oov_indices=1, mask_token="",
                                oov_token="[OOV]")
    layer.adapt(_WORDS)
    return keras.Sequential([layers.Input(shape=(None,), dtype="string"), layer])


@case(_PP + "index_lookup_test.py::test_saving (vocabulary given)",
      inputs=lambda: np.array([["one", "two", "four"]]), note="string inputs")
def string_lookup_vocabulary(seed):
    return keras.Sequential([layers.Input(shape=(None,), dtype="string"), layers.StringLookup(
        vocabulary=["one", "two", "three"], num_oov_indices=1, mask_token="",
        oov_token="[OOV]")])


@case(_PP + "string_lookup_test.py::test_one_hot_output (adapted)",
      inputs=lambda: np.array(["one", "two", "four"]), note="string inputs; one-hot")
def string_lookup_one_hot(seed):
    layer = layers.StringLookup(output_mode="one_hot")
    layer.adapt(_WORDS)
    return keras.Sequential([layers.Input(shape=(), dtype="string"), layer])


@case(_PP + "integer_lookup_test.py::test_adapt_flow",
      inputs=lambda: np.array([[12, 1138, 42, 7]], dtype="int64"),
      note="integer inputs; vocabulary from adapt")
def integer_lookup_adapted(seed):
    layer = layers.IntegerLookup(max_tokens=10)
    layer.adapt(np.array([12, 1138, 42, 42, 12, 12], dtype="int64"))
    return keras.Sequential([layers.Input(shape=(None,), dtype="int64"), layer])


@case(_PP + "text_vectorization_test.py::test_save_load_with_ngrams_flow",
      inputs=lambda: np.array(["foo bar", "bar baz", "baz bada boom"]),
      note="string inputs; vocabulary from adapt")
def text_vectorization_int(seed):
    layer = layers.TextVectorization(max_tokens=100, output_mode="int",
                                     output_sequence_length=4, ngrams=2)
    layer.adapt(np.array(["foo bar", "bar baz", "baz bada boom"]))
    return keras.Sequential([layers.Input(dtype="string", shape=()), layer])


@case(_PP + "text_vectorization_test.py::test_save_load_tf_idf_mode",
      inputs=lambda: np.array(["foo bar", "bar baz", "baz bada boom"]),
      note="string inputs; tf-idf weights from adapt")
def text_vectorization_tf_idf(seed):
    layer = layers.TextVectorization(max_tokens=100, output_mode="tf_idf")
    layer.adapt(np.array(["foo bar", "bar baz", "baz bada boom"]))
    return keras.Sequential([layers.Input(dtype="string", shape=()), layer])


@case(_PP + "text_vectorization_test.py (tokens into a trained Embedding)",
      inputs=lambda: np.array(["foo bar", "bar baz", "baz bada boom"]),
      note="string inputs into trainable layers")
def text_classifier(seed):
    keras.utils.set_random_seed(seed)
    vectorize = layers.TextVectorization(max_tokens=20, output_sequence_length=3)
    vectorize.adapt(np.array(["foo bar", "bar baz", "baz bada boom"]))
    inputs = layers.Input(dtype="string", shape=())
    x = layers.Embedding(20, 4)(vectorize(inputs))
    model = keras.Model(inputs, layers.Dense(1)(layers.GlobalAveragePooling1D()(x)))
    model.compile("adam", "mse")
    return _trained(model, np.array(["foo bar", "bar baz"]), _floats(2, 1, seed=8))


@case(_PP + "hashing_test.py::test_saving",
      inputs=lambda: np.array(["omar", "stringer", "marlo", "wire", "skywalker"]),
      note="string inputs")
def hashing_strings(seed):
    inputs = layers.Input(shape=(), dtype="string")
    return keras.Model(inputs, layers.Hashing(num_bins=100)(inputs))


@case(_PP + "hashing_test.py (salted, one-hot)",
      inputs=lambda: np.array([[1], [7], [1138]], dtype="int64"), note="integer inputs")
def hashing_ints(seed):
    inputs = layers.Input(shape=(1,), dtype="int64")
    return keras.Model(inputs, layers.Hashing(num_bins=8, salt=133, output_mode="one_hot")(
        inputs))


@case(_PP + "discretization_test.py::test_saving (adapt flow)",
      inputs=lambda: _floats(4, 3, seed=9))
def discretization_adapted(seed):
    layer = layers.Discretization(num_bins=4)
    layer.adapt(_floats(32, 3, seed=10))
    return keras.Sequential([layers.Input((3,)), layer])


@case(_PP + "discretization_test.py::test_saving (fixed bins)",
      inputs=lambda: np.array([[-1.0, 0.0, 0.1, 0.2, 0.4, 0.5, 1.0, 1.2, 0.98]], "float32"))
def discretization_fixed(seed):
    return keras.Sequential([layers.Input((9,)),
                             layers.Discretization(bin_boundaries=[0.0, 0.35, 0.5, 1.0])])


@case(_PP + "category_encoding_test.py (count, into Dense)",
      inputs=lambda: np.array([[0, 1, 1, 3]], dtype="int32"), note="integer inputs")
def category_encoding(seed):
    keras.utils.set_random_seed(seed)
    inputs = layers.Input((4,), dtype="int32")
    x = layers.CategoryEncoding(num_tokens=4, output_mode="count")(inputs)
    return keras.Model(inputs, layers.Dense(2)(x))


@case(_HERE + "layers/core/embedding_test.py (integer ids, trained)",
      inputs=lambda: np.array([[0, 3, 9], [1, 1, 2]], dtype="int32"), note="integer inputs")
def embedding_trained(seed):
    keras.utils.set_random_seed(seed)
    inputs = layers.Input((3,), dtype="int32")
    x = layers.Embedding(10, 4)(inputs)
    model = keras.Model(inputs, layers.Dense(1)(layers.Flatten()(x)))
    model.compile("adam", "mse")
    return _trained(model, np.array([[0, 3, 9], [1, 1, 2]], "int32"), _floats(2, 1))


# -- quantization and LoRA (layers/core/dense_test.py, einsum_dense_test.py, ...) -------------

_DT = _HERE + "layers/core/dense_test.py::"


def _quantized_dense(seed: int, mode: str, **kwargs: Any) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), layers.Dense(16)])
    model.quantize(mode, **kwargs)
    return model


@case(_DT + "test_quantize_int (int8)", inputs=lambda: _floats(2, 8))
def dense_int8(seed):
    return _quantized_dense(seed, "int8")


@case(_DT + "test_quantize_int (int4)", inputs=lambda: _floats(2, 8))
def dense_int4(seed):
    return _quantized_dense(seed, "int4")


@case(_DT + "test_quantize_float8_inference", inputs=lambda: _floats(2, 8),
      note="float8: the layer reorders its variables when loaded")
def dense_float8(seed):
    return _quantized_dense(seed, "float8")


@case(_DT + "test_quantize_float8 (trained)", inputs=lambda: _floats(2, 8),
      note="float8 scales and amax histories changed by training")
def dense_float8_trained(seed):
    model = _quantized_dense(seed, "float8")
    model.compile(keras.optimizers.AdamW(learning_rate=0.1), "mse")
    # (float8's custom gradient needs Keras' own train step, not a bare tape)
    model.train_on_batch(_floats(2, 8), _floats(2, 16, seed=8))
    return model


@case(_DT + "test_enable_lora", inputs=lambda: _floats(2, 8), note="LoRA, trained")
def dense_lora(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), layers.Dense(16)])
    model.layers[0].enable_lora(4)
    model.compile("sgd", "mse")
    return _trained(model, _floats(2, 8), _floats(2, 16, seed=8))


@case(_DT + "test_quantize_lora_integration (int8)", inputs=lambda: _floats(2, 8),
      note="LoRA on an int8 kernel, trained")
def dense_lora_int8(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), layers.Dense(16)])
    model.layers[0].enable_lora(4)
    model.layers[0].quantize("int8")
    model.compile("sgd", "mse")
    return _trained(model, _floats(2, 8), _floats(2, 16, seed=8))


@case(_HERE + "layers/core/einsum_dense_test.py::test_quantize_int (int8)",
      inputs=lambda: _floats(2, 3, 4))
def einsum_int8(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3, 4)),
                              layers.EinsumDense("abc,cd->abd", output_shape=(3, 8))])
    model.quantize("int8")
    return model


@case(_HERE + "layers/core/embedding_test.py::test_quantize_int (int8)",
      inputs=lambda: np.array([[0, 3, 9], [1, 1, 2]], dtype="int32"), note="integer inputs")
def embedding_int8(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,), dtype="int32"), layers.Embedding(10, 4)])
    model.quantize("int8")
    return model


@keras.saving.register_keras_serializable(package="corpus")
class PolicySubclass(layers.Layer):
    """dtype_policy_map_test.test_basic_usage: sublayers with mixed policies."""

    def __init__(self, dtype=None, name="subclass", **kwargs):
        super().__init__(dtype=dtype, name=name, **kwargs)
        self.dense = layers.Dense(8, dtype=dtype, name=f"{name}_dense")
        self.bn = layers.BatchNormalization(dtype=dtype, name=f"{name}_bn")
        self.relu = layers.ReLU(dtype=dtype, name=f"{name}_relu")

    def call(self, inputs, training=None):
        return self.relu(self.bn(self.dense(inputs), training=training))

    def get_config(self):
        config = super().get_config()
        policy_map = keras.dtype_policies.DTypePolicyMap()
        for layer in self._flatten_layers():
            if layer.quantization_mode is not None:
                policy_map[layer.path] = layer.dtype_policy
        if len(policy_map) > 0:
            config.update({"dtype": policy_map})
        return config


@case(_HERE + "dtype_policies/dtype_policy_map_test.py::test_basic_usage",
      inputs=lambda: _floats(4, 4), note="DTypePolicyMap of an int8 sublayer")
def dtype_policy_map(seed):
    keras.utils.set_random_seed(seed)
    inputs = layers.Input([4])
    model = keras.Model(inputs, PolicySubclass()(inputs))
    model.quantize("int8")
    return model


def _gptq_dense(seed: int) -> keras.Model:
    from keras.src.quantizers.gptq import GPTQ

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((16,)), layers.Dense(32)])
    dense = model.layers[0]
    config = keras.quantizers.GPTQConfig(dataset=None, tokenizer=None, weight_bits=4,
                                         symmetric=False, group_size=-1)
    dense.quantize("gptq", config=config)
    gptq = GPTQ(dense, config)
    gptq.update_hessian_with_batch(_rng(42).standard_normal((64, 16)).astype("float32"))
    gptq.quantize_and_correct_layer()
    gptq.free()
    return model


@case(_HERE + "quantizers/gptq_test.py::test_gptq_on_single_layer",
      inputs=lambda: _floats(2, 16),
      needs=_keras_src("keras.src.quantizers.gptq", "GPTQ", "GPTQ"), note="GPTQ, calibrated")
def dense_gptq(seed):
    return _gptq_dense(seed)


def _awq_needs() -> str | None:
    return _keras_src("keras.src.quantizers.awq", "AWQ", "AWQ")()


@case(_HERE + "quantizers/awq_test.py + dense_test.py::test_awq_serialization (calibrated)",
      inputs=lambda: _floats(2, 16), needs=_awq_needs, note="AWQ, calibrated")
def dense_awq(seed):
    from keras.src.quantizers.awq import AWQ

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((16,)), layers.Dense(32)])
    dense = model.layers[0]
    config = keras.quantizers.AWQConfig(dataset=None, tokenizer=None, group_size=8,
                                        num_grid_points=10)
    dense.quantize("awq", config=config)
    awq = AWQ(dense, config)
    awq.update_activation_magnitudes(_rng(42).standard_normal((64, 16)).astype("float32"))
    awq.quantize_layer()
    awq.free()
    return model


# -- dtype policies --------------------------------------------------------------------------

_DP = _HERE + "dtype_policies/dtype_policy_test.py + mixed_precision guide"


def _under_policy(policy: str, seed: int, optimizer: Any = "adam") -> keras.Model:
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        inputs = keras.Input((4,))
        x = layers.Dense(8, activation="relu")(inputs)
        x = layers.BatchNormalization()(x)
        outputs = layers.Dense(2, dtype="float32")(x)
        model = keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy(previous)
    model.compile(optimizer, "mse")
    return _trained(model, _floats(4, 4), _floats(4, 2, seed=8))


@case(_DP + " (mixed_float16)", inputs=lambda: _floats(4, 4),
      note="LossScaleOptimizer wraps Adam")
def mixed_float16(seed):
    return _under_policy("mixed_float16", seed)


@case(_DP + " (mixed_bfloat16)", inputs=lambda: _floats(4, 4))
def mixed_bfloat16(seed):
    return _under_policy("mixed_bfloat16", seed)


@case(_DP + " (bfloat16 variables)", inputs=lambda: _floats(4, 4))
def bfloat16_policy(seed):
    return _under_policy("bfloat16", seed)


@case(_HERE + "optimizers/loss_scale_optimizer_test.py (explicit LossScaleOptimizer)",
      inputs=lambda: _floats(4, 4), note="LossScaleOptimizer given explicitly")
def loss_scale_optimizer(seed):
    return _under_policy("mixed_float16", seed, keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)))


# -- RNNs, stateful and not (layers/rnn/*_test.py) ------------------------------------------

_RNN = _HERE + "layers/rnn/"


def _sequence() -> np.ndarray:
    return (np.arange(24).reshape((2, 3, 4)).astype("float32") / 24.0)


def _stateful(cls: type, seed: int, *, reset: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3, 4), batch_size=2)
    model = keras.Model(inputs, cls(4, stateful=True)(inputs))
    model(_sequence())  # the states now hold the last batch's
    if reset:
        model.layers[-1].reset_state()
    return model


@case(_RNN + "lstm_test.py::test_statefulness", inputs=_sequence,
      note="stateful: the states hold the last batch's")
def stateful_lstm(seed):
    return _stateful(layers.LSTM, seed)


@case(_RNN + "gru_test.py::test_statefulness", inputs=_sequence,
      note="stateful: the states hold the last batch's")
def stateful_gru(seed):
    return _stateful(layers.GRU, seed)


@case(_RNN + "lstm_test.py::test_statefulness (after reset_state)", inputs=_sequence,
      note="stateful, states reset to zero")
def stateful_lstm_reset(seed):
    return _stateful(layers.LSTM, seed, reset=True)


@case(_RNN + "gru_test.py::test_dropout (trained)", inputs=_sequence,
      note="recurrent dropout: seed generators")
def gru_dropout(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3, 4))
    model = keras.Model(inputs, layers.GRU(4, dropout=0.5, recurrent_dropout=0.5)(inputs))
    model.compile("adam", "mse")
    return _trained(model, _sequence(), _floats(2, 4, seed=8))


@case(_RNN + "simple_rnn_test.py (return_sequences, masking)", inputs=_sequence)
def simple_rnn_masked(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3, 4))
    x = layers.Masking()(inputs)
    return keras.Model(inputs, layers.SimpleRNN(3, return_sequences=True)(x))


# -- losses, metrics, randomness, misc --------------------------------------------------------

@keras.saving.register_keras_serializable(package="corpus")
class ScaledMSE(keras.losses.Loss):
    """A registered Loss subclass with its own config."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, y_true, y_pred):
        return self.scale * ops.mean(ops.square(y_pred - y_true), axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@case(_HERE + "losses/loss_test.py + saving_lib_test.py (a registered Loss subclass)",
      inputs=lambda: _floats(2, 4), note="custom loss class")
def custom_loss_class(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    model.compile("adam", ScaledMSE(3.0), metrics=["mae"])
    return _trained(model, _floats(2, 4), _floats(2, 2, seed=8))


@case(_SL + "test_saved_module_paths_and_class_names (custom loss function, functional)",
      inputs=lambda: _floats(2, 4), note="custom loss function 'corpus>my_mean_squared_error'")
def custom_loss_function(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2)(inputs))
    model.compile("adam", my_mean_squared_error, metrics=[keras.metrics.Hinge()])
    return _trained(model, _floats(2, 4), _floats(2, 2, seed=8))


@case(_HERE + "layers/regularization/dropout_test.py (trained)", inputs=lambda: _floats(4, 6),
      note="Dropout: a seed generator")
def dropout_trained(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), layers.Dense(6), layers.Dropout(0.5),
                              layers.Dense(1)])
    model.compile("adam", "mse")
    return _trained(model, _floats(4, 6), _floats(4, 1, seed=8))


@case(_HERE + "layers/normalization/batch_normalization_test.py (trained)",
      inputs=lambda: _floats(4, 6))
def batch_norm_trained(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), layers.BatchNormalization(), layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return _trained(model, _floats(4, 6), _floats(4, 1, seed=8))


@case(_HERE + "models/model_test.py (compiled, never trained)", inputs=lambda: _floats(2, 5),
      note="optimizer not built")
def compiled_not_trained(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((5,)), layers.Dense(3)])
    model.compile("adam", "mse", metrics=["mae"])
    return model


@case(_HERE + "models/sequential_test.py (unbuilt Sequential)", inputs=None, note="unbuilt")
def unbuilt_sequential(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([layers.Dense(3), layers.Dense(1)])


@case(_HERE + "layers/convolutional/conv_test.py (Conv2D, pooling)",
      inputs=lambda: _floats(2, 6, 6, 2))
def conv2d(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6, 6, 2)), layers.Conv2D(3, 3),
                              layers.MaxPooling2D(), layers.Flatten(), layers.Dense(2)])
    model.compile("adam", "mse")
    return _trained(model, _floats(2, 6, 6, 2), _floats(2, 2, seed=8))


@case(_HERE + "layers/attention/multi_head_attention_test.py (self-attention)",
      inputs=lambda: _floats(2, 3, 4))
def multi_head_attention(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3, 4))
    x = layers.MultiHeadAttention(num_heads=2, key_dim=2)(inputs, inputs)
    x = layers.LayerNormalization()(x + inputs)
    return keras.Model(inputs, x)
