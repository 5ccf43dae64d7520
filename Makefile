PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint typecheck demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[train,dev,compare,gpu-static]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check gpubfv kernels dmhe tests benchmarks examples
	$(BIN)/ruff format --check gpubfv kernels dmhe tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy gpubfv dmhe

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	rm -rf runs/demo  # the demo is a fresh run every time (re-runnable)
	$(BIN)/python examples/03_decentralized_training.py 5 --peers 4 --out runs/demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_bfv.py
	$(BIN)/python benchmarks/bench_mhe.py
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
