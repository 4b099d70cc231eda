# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv from nothing when it is missing and is safe to run again.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kerasave-installed
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kerasave demo

test: $(STAMP)
	$(BIN)/python -m ruff check kerasave tests
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/python -m ruff check kerasave tests

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
