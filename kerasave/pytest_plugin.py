"""kerasave's pytest plugin (registered through the ``pytest11`` entry point).

It gives every test session a ``round_trip`` fixture::

    def test_my_model_survives_saving(round_trip):
        reports = round_trip(build_my_model())   # every format the model can hold

The fixture calls :func:`kerasave.testing.assert_round_trip` with pytest's
``tmp_path``. Importing this module is cheap: TensorFlow is loaded only when a
test uses the fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def round_trip(tmp_path: Path) -> Callable[..., Any]:
    """Save a model in every format it can hold, verify each, fail with the list."""

    def check(model: Any, formats: Iterable[str] | None = None) -> Any:
        from kerasave.testing import assert_round_trip

        return assert_round_trip(model, tmp_path, formats=formats)

    return check
