"""DESIGN.md's table: what breaks on Keras 3 today, and that kerasave makes it work.

Each test first shows the native failure (so the test notices the day Keras
fixes it), then does the same job with kerasave. The rows about Keras 2 configs,
``loss="mse"`` in ``.h5`` and restoring into unbuilt models live in
test_config.py, test_whole.py and test_weights.py.
"""

import re
from pathlib import Path

import numpy as np
import pytest

import kerasave as ks

from .conftest import all_vars, assert_bit_exact, perturb, values


def test_save_weights_to_a_checkpoint_prefix(trained, tmp_path):
    with pytest.raises(ValueError, match="weights.h5"):
        trained.save_weights(str(tmp_path / "weights" / "my_model"))
    saved = values(all_vars(trained))
    assert ks.save_weights(trained, tmp_path / "weights" / "my_model").ok
    perturb(trained)
    ks.load_weights(trained, tmp_path / "weights" / "my_model")
    assert_bit_exact(saved, all_vars(trained))


def test_save_weights_with_save_format_h5(trained, tmp_path):
    with pytest.raises(TypeError):
        trained.save_weights(str(tmp_path / "my_model.h5"), save_format="h5")
    saved = values(all_vars(trained))
    assert ks.save_weights(trained, tmp_path / "my_model.h5", format="h5").ok
    perturb(trained)
    ks.load_weights(trained, tmp_path / "my_model.h5")
    assert_bit_exact(saved, all_vars(trained))


def test_to_yaml_was_removed(trained):
    with pytest.raises((AttributeError, RuntimeError, NotImplementedError)):
        trained.to_yaml()
    fresh = ks.model_from_yaml(ks.to_yaml(trained))
    assert [w.shape for w in fresh.weights] == [w.shape for w in trained.weights]


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start\s+```python\n(.*?)```", readme, re.S)
    assert block, "README lost its quick start"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "weights" / "my_model.index").exists()
    assert np.asarray(namespace["fresh"].weights[0]).shape == (32, 64)
