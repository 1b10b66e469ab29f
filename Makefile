# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_ID := $(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0 (CPU build) is installed first from the local wheel store; the rest resolves from PyPI.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test,quant,compare]"
	touch $(STAMP)

setup: $(STAMP)

## Zero-shot eval, short LoRA fine-tune, eval again on DialogSum with smollm2-135m-instruct (~12 min on 2 CPU cores).
demo: setup
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/tunelab train configs/dialogsum_lora.yaml --set name=dialogsum-lora-$(RUN_ID)

## The whole test suite, the real-model integration test included (pulls smollm2-135m-instruct once).
test: setup
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/python -m pytest -q

## Unit tests on tiny models only (no model download).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
