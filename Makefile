# One-command set-up: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch that lies on this machine; a plain `torch` requirement can pull a CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet "$(TORCH_PIN)" -e ".[all]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

demo: install
	$(PY) -m recipes.demo $(DEMO_ARGS)

bench: install
	$(PY) benchmarks/optimizer_step.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
