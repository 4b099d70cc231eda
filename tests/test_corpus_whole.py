"""Never worse than plain Keras: the native oracle corpus, whole-model formats
(``.keras``, legacy ``.h5``, SavedModel). See ``tests/test_corpus.py``."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from kerasave.formats import by_label  # noqa: E402
from tests.corpus.checking import check_pair, params  # noqa: E402
from tests.corpus.oracle import FORMATS  # noqa: E402


# The whole models of the corpus' formats (test_corpus.py: the others).
@pytest.mark.parametrize(("name", "fmt"), params(
    tuple(f for f in FORMATS if by_label(f).kind == "model")))
def test_pair(name, fmt, tmp_path):
    check_pair(name, fmt, tmp_path)
