"""Never worse than plain Keras: the native oracle corpus, weights and config formats.

Every model of ``tests/corpus/models.py`` (re-expressed from Keras' own tests) is
saved and read back by kerasave and by Keras' own calls for the same format
(``tests/corpus/oracle.py``): wherever Keras round-trips it exactly, kerasave
must too; elsewhere kerasave must be exact or refuse with a ``KerasaveError``,
leaving nothing at the path and the model as it was. Each pair's outcome must be
what ``docs/compatibility.md`` says. The whole-model formats are in
``tests/test_corpus_whole.py`` (two files: pytest-xdist's workers share them).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from tests.corpus import table  # noqa: E402
from tests.corpus.checking import check_pair, params  # noqa: E402
from tests.corpus.models import CASES  # noqa: E402
from tests.corpus.oracle import FORMATS  # noqa: E402


@pytest.mark.parametrize(("name", "fmt"), params(("checkpoint", "h5 weights", "json", "yaml")))
def test_pair(name, fmt, tmp_path):
    check_pair(name, fmt, tmp_path)


def test_the_corpus_is_large_and_says_where_each_model_comes_from():
    assert len(CASES) >= 60
    for case in CASES.values():
        assert case.source.startswith("keras/src/"), case.name


def test_the_page_lists_every_pair():
    version, cells = table.documented()
    assert version, "docs/compatibility.md names no Keras version"
    assert set(cells) == {(name, fmt) for name in CASES for fmt in FORMATS}
