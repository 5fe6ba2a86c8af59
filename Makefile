# One-command set-up: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch build: TORCH_PIN is the requirement, TORCH_INDEX_URL the index pip takes it from (empty:
# pip's configured index, PyPI by default). On Linux x86_64 PyPI's torch==2.13.0 is a CUDA build
# (several GB); the CPU wheel: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu; a CUDA build
# for your driver: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu1XY (README.md, Install).
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(strip $(TORCH_INDEX_URL)),--index-url $(TORCH_INDEX_URL),)

.PHONY: install test test-fast lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH_PIN)"
	$(PY) -m pip install --quiet "$(TORCH_PIN)" -e ".[all]"
	touch $(STAMP)

# Everything (slow end-to-end and multi-process runs included), each test at most 10 minutes.
test: install
	$(PY) -m pytest -q --timeout 600 tests

# The unit tests: 51-62 s on 2 CPU cores from a fresh clone (two pytest-xdist workers, one
# file each at a time, one torch thread each).
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --timeout 120 -n 2 --dist loadfile -m "not slow and not distributed" tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install
	$(PY) -m recipes.demo $(DEMO_ARGS)

bench: install
	$(PY) -m benchmarks.optimizer_step

clean:
	rm -rf $(VENV) demo_output .pytest_cache
