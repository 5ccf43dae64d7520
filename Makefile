PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-train
# Where torch comes from. Empty: PyPI (the CUDA build on Linux, several GB). On a machine
# without an NVIDIA GPU: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: venv test test-fast lint typecheck demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the demo needs only the [train] extra: torch, torchvision, mlxtend, matplotlib, tqdm
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@echo "make demo: installing gpubfv + the [train] extra (numpy, numba, torch 2.14.1,"
	@echo "  torchvision, mlxtend, matplotlib, tqdm) into $(VENV)$(if $(TORCH_INDEX), (torch from $(TORCH_INDEX)),)"
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install torch==2.14.1 torchvision==0.29.1 --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e ".[train]"
	touch $(DEMO_STAMP)

# tests, lint and types: [train] + [dev] (pytest, hypothesis, ruff, mypy, tensorboard) +
# [gpu-static] (the CUDA compiler wheels that tests/test_gpu_static.py needs) + [compare]
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "make test: installing gpubfv + the [train,dev,compare,gpu-static] extras into $(VENV)"
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install torch==2.14.1 torchvision==0.29.1 --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e ".[train,dev,compare,gpu-static]"
	touch $(STAMP) $(DEMO_STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gpubfv kernels dmhe tests benchmarks examples
	$(BIN)/ruff format --check gpubfv kernels dmhe tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy gpubfv dmhe

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -m "not slow" --durations=25 tests

test-all: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q tests

demo: $(DEMO_STAMP)
	rm -rf runs/demo  # the demo is a fresh run every time (re-runnable)
	$(BIN)/python examples/03_decentralized_training.py 5 --peers 4 --out runs/demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_bfv.py
	$(BIN)/python benchmarks/bench_mhe.py
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
