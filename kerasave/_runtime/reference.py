"""The classic tutorial's reference model and its toy data."""

from __future__ import annotations

import numpy as np

from kerasave._runtime.lazy import keras
from kerasave._runtime.public import public

__all__ = ["reference_model", "reference_data"]


def reference_model(*, seed: int | None = None) -> keras.Model:
    """Build the tutorial's model: Input 32 → Dense 64 relu → Dense 10 softmax.

    Compiled with ``Adam(learning_rate=0.001)``, categorical crossentropy and
    accuracy; built, with its optimizer variables built, so every format can
    hold its full state from the start.

    Args:
        seed: When given, the kernels are drawn from ``GlorotUniform(seed)``
            initializers, so the same seed gives the same initial weights. The
            global random state is not touched.

    Examples:
        >>> model = reference_model(seed=0)
        >>> again = reference_model(seed=0)
        >>> all((a.numpy() == b.numpy()).all() for a, b in zip(model.weights, again.weights))
        True
    """
    def kernel(offset: int) -> keras.initializers.Initializer | str:
        if seed is None:
            return "glorot_uniform"
        return keras.initializers.GlorotUniform(seed=seed + offset)

    model = keras.Sequential(
        [
            keras.Input(shape=(32,)),
            keras.layers.Dense(64, activation="relu", kernel_initializer=kernel(0)),
            keras.layers.Dense(10, activation="softmax", kernel_initializer=kernel(1)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.optimizer.build(model.trainable_variables)
    return model


def reference_data(n: int = 1000, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic toy data for the reference model.

    Returns:
        ``(data, labels)``: float32 inputs of shape ``(n, 32)`` drawn uniformly
        from [0, 1), and float32 one-hot labels of shape ``(n, 10)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0. Received: n={n}")
    rng = np.random.default_rng(seed)
    data = rng.random((n, 32), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=n)]
    return data, labels


public(reference_data, reference_model)
