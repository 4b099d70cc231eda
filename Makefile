# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv from nothing when it is missing and is safe to run again.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kerasave-installed
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: demo test lint venv clean reliability bench docs

venv: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kerasave demo

test: $(STAMP)
	$(BIN)/python -m ruff check kerasave tests bench
	$(BIN)/python -m pytest -n 2 --dist loadfile

reliability: $(STAMP)
	$(BIN)/python bench/reliability.py

bench: $(STAMP)
	$(BIN)/python bench/perf.py

# The tutorials are rendered with the outputs stored in them (tests/test_notebooks.py
# checks those are current). NO_MKDOCS_2_WARNING: mkdocs-material's banner, not a warning.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/python -m ruff check kerasave tests bench

clean:
	rm -rf $(VENV) site build dist *.egg-info .pytest_cache .ruff_cache
