# One-command set-up: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch that lies on this machine; a plain `torch` requirement can pull a CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install test test-fast lint demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet "$(TORCH_PIN)" -e ".[all]"
	touch $(STAMP)

# Everything (slow end-to-end and multi-process runs included), each test at most 10 minutes.
test: install
	$(PY) -m pytest -q --timeout 600 tests

# The unit tests: under a minute on 2 CPU cores.
test-fast: install
	$(PY) -m pytest -q --timeout 120 -m "not slow and not distributed" tests

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(PY) -m recipes.demo $(DEMO_ARGS)

bench: install
	$(PY) -m benchmarks.optimizer_step

clean:
	rm -rf $(VENV) demo_output .pytest_cache
