"""The native oracle corpus: models from Keras' own tests, each through every format,
against Keras' own save and load of the same model (``tests/test_corpus*.py``)."""
