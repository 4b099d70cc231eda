import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasave._runtime.quiet import import_tensorflow  # noqa: E402

import_tensorflow()  # (TensorFlow 2.21 logs at load whatever the level says)

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kerasave as ks  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def values(variables):
    """Copies of variable values, for bit-exact comparisons later."""
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def assert_bit_exact(expected, actual):
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        a = np.asarray(keras.ops.convert_to_numpy(a)) if not isinstance(a, np.ndarray) else a
        assert e.dtype == a.dtype and e.shape == a.shape
        assert e.tobytes() == a.tobytes()


def all_vars(model):
    optimizer = getattr(model, "optimizer", None)
    return list(model.variables) + list(optimizer.variables if optimizer else [])


def next_loss(model, *batch):
    """One more training step; the loss it reports for that step alone.

    ``train_on_batch`` reports the running mean its loss trackers hold, which no
    format saves (they are not training state), and Keras 3.12 does not reset
    them between calls: a model trained before would average in its history.
    """
    model.reset_metrics()
    return model.train_on_batch(*batch)


def perturb(model, seed=99):
    """Change every variable (model and optimizer) so a restore has work to do."""
    rng = np.random.default_rng(seed)
    for v in all_vars(model):
        value = keras.ops.convert_to_numpy(v)
        if np.issubdtype(value.dtype, np.floating):
            v.assign(rng.standard_normal(value.shape).astype(value.dtype))
        else:
            v.assign(value + 7)


def bfloat16_model():
    """A small model built under the "bfloat16" policy, trained a step (Adam built)."""
    keras.config.set_dtype_policy("bfloat16")
    try:
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(4)(inputs)))
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile("adam", "mse")
    data = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    model.fit(data, data[:, :1], verbose=0)
    return model


@pytest.fixture
def trained():
    """The reference model after a few training steps (optimizer state non-trivial)."""
    model = ks.reference_model(seed=0)
    data, labels = ks.reference_data(128, seed=0)
    model.fit(data, labels, epochs=1, batch_size=32, verbose=0)
    return model


@pytest.fixture
def batch():
    return ks.reference_data(32, seed=5)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free localhost port, for this test process
    (``tests/s3server.py``); the AWS settings of the process point at it."""
    from tests.s3server import S3Server

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN",
                                            "AWS_ENDPOINT_URL")}
    server = S3Server()
    server.activate()
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_server):
    """A fresh, empty bucket on the local S3 server: ``s3://kerasave-<hex>``."""
    return s3_server.new_bucket()
