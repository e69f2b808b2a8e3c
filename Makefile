# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo needs the package alone: no PyTorch, no test tools.
RUN_STAMP := $(VENV)/.installed-run
PYTEST_ARGS ?=
# `make demo SAVE_TO=DIR` also writes the demo's model with its SavedModel and TFLite exports.
SAVE_TO ?=

.PHONY: setup test test-slow test-learning test-large lint demo bench clean

setup: $(STAMP)

$(RUN_STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of PyTorch, for the checkpoint-conversion tests only; an unpinned torch
	# would pull a CUDA build of several GB.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow and not learning" $(PYTEST_ARGS)

# The training regression test (about 8 minutes): outside CI's 30-minute budget.
test-learning: $(STAMP)
	$(PY) -m pytest -q -m "learning" $(PYTEST_ARGS)

test-large: $(STAMP)
	$(PY) -m pytest -q -m "large" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mirrorgan_tf tests benchmarks

demo: $(RUN_STAMP)
	$(VENV)/bin/mirrorgan-tf demo $(if $(SAVE_TO),--save-to $(SAVE_TO))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
