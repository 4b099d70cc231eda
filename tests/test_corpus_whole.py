"""Never worse than plain Keras: the native oracle corpus, whole-model formats
(``.keras``, legacy ``.h5``, SavedModel). See ``tests/test_corpus.py``."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from tests.corpus.checking import check_pair, params  # noqa: E402


@pytest.mark.parametrize(("name", "fmt"), params(("keras", "h5 model", "savedmodel")))
def test_pair(name, fmt, tmp_path):
    check_pair(name, fmt, tmp_path)
