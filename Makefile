# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo needs the package alone: no PyTorch, no test tools.
RUN_STAMP := $(VENV)/.installed-run
PYTEST_ARGS ?=
# Test processes (pytest-xdist): the suite is mostly single-threaded tracing and small ops, so
# two workers on two cores finish it sooner; `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2
# `make demo SAVE_TO=DIR` also writes the demo's model with its SavedModel and TFLite exports.
SAVE_TO ?=

.PHONY: setup test test-slow test-learning test-large lint demo shipped-model bench clean

setup: $(STAMP)

$(RUN_STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# PyTorch and torchvision for the tests only: checkpoint conversion and pytorch-fid (the
	# FID parity tests; pytorch-fid needs torchvision). PyPI's torchvision does not import
	# beside the CPU build 2.13.0, so this is the pair this machine holds on disk (a CUDA
	# build, about 5.5 GB in .venv, 2 minutes to install here); the package needs neither.
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev]"
	# That torch's triton (GPU kernels only) segfaults on import in a process that imported
	# TensorFlow first (torchvision imports it); the CPU paths of torch work without it.
	$(PY) -m pip uninstall --yes --quiet triton
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "slow and not learning" $(PYTEST_ARGS)

# The training regression test (about 8 minutes): outside CI's 30-minute budget.
test-learning: $(STAMP)
	$(PY) -m pytest -q -m "learning" $(PYTEST_ARGS)

test-large: $(STAMP)
	$(PY) -m pytest -q -m "large" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mirrorgan_tf tests benchmarks docs/experiments

demo: $(RUN_STAMP)
	$(VENV)/bin/mirrorgan-tf demo $(if $(SAVE_TO),--save-to $(SAVE_TO))

# The model of saved_models/shapes, retrained (README, "The shipped model"; about 1 h 30 min on 2
# AVX512-BF16 cores): the demo's chain with the longer `ship` schedule, ending on the full
# distribution.
shipped-model: $(RUN_STAMP)
	$(VENV)/bin/mirrorgan-tf demo --schedule ship --out runs/ship --save-to saved_models/shapes

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
