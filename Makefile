# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_ID := $(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo demo-lora study test test-fast test-llamacpp llamacpp readme-numbers throughput clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch 2.13.0 (CPU build) is installed first from the local wheel store; the rest resolves from PyPI.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test,quant,compare,serve]"
	touch $(STAMP)

# The browser tests (report, playground) use Debian's chromium; installed here when missing and possible
# (root with apt-get), otherwise those tests skip and say why.
BROWSER_STAMP := $(VENV)/.browser
$(BROWSER_STAMP): | $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: chromium not installed; the browser tests will skip"
	touch $(BROWSER_STAMP)

setup: $(STAMP) $(BROWSER_STAMP)

## Compare zero-shot, LoRA, prompt tuning and full fine-tuning of smollm2-135m-instruct on DialogSum:
## task gain, forgetting and cost, in runs/dialogsum-compare/report.html (~15-25 min on 2 CPU cores).
## Finished arms are reused when run again.
demo: setup
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/tunelab compare configs/compare_dialogsum.yaml

## One run: zero-shot eval, LoRA fine-tune, eval again, before/after table (~8 min on 2 CPU cores).
demo-lora: setup
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/tunelab train configs/dialogsum_lora.yaml --set name=dialogsum-lora-$(RUN_ID)

## The study (configs/study_dialogsum.yaml): every claim of the design on the full DialogSum test set with paired
## CIs, into results/dialogsum-study/ (hours on 2 cores: run it in the background; it resumes where it stopped);
## then the README's study table.
study: setup
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/tunelab compare configs/study_dialogsum.yaml
	$(BIN)/python bench/readme_numbers.py --collect-study

## Lint (bug-catching rules), format check and type check, then the whole test suite, the real-model tests included (pulls
## smollm2-135m-instruct once).
test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/python -m pytest -q

## Unit tests on tiny models only (no model download).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

## llama.cpp's Python binding (for checking exports), built from source once (~20 min on 2 cores) and kept as a
## wheel in ~/.cache/tunelab/wheels. Portable CPU flags: a native build can die with an illegal instruction on
## another CPU of the same machine type.
LLAMACPP_VERSION := 0.3.36
LLAMACPP_WHEELS  := $(HOME)/.cache/tunelab/wheels
llamacpp: setup
	@$(BIN)/python -c "import llama_cpp" 2>/dev/null || { \
	  ls $(LLAMACPP_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	    $(BIN)/pip wheel --quiet --no-deps -w $(LLAMACPP_WHEELS) "llama-cpp-python==$(LLAMACPP_VERSION)" && \
	  $(BIN)/pip install --quiet $(LLAMACPP_WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl diskcache; }

## The exporter checked by llama.cpp itself: tiny models in tests, then (when the demo has run) the demo's LoRA arm.
test-llamacpp: llamacpp
	$(BIN)/python -m pytest -q tests/test_export.py tests/test_export_llamacpp.py
	@if [ -f runs/dialogsum-compare/lora/COMPLETE ]; then $(BIN)/python bench/export.py; \
	  else echo "note: run make demo first to check the demo's LoRA arm too (bench/export.py)"; fi

## Regenerate the README's measured tables from fresh measurements on this machine: the demo (finished arms are
## reused; remove runs/dialogsum-compare first for new numbers), a single LoRA run, start-up, serving, lm-eval
## agreement, export checked by llama.cpp, methods and the demo's memory side by side (~2.5 h on 2 cores); then
## bench/readme_numbers.py rewrites README.md's generated regions from bench/results/.
readme-numbers: demo demo-lora llamacpp throughput
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/lm_eval_agreement.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/methods.py
	$(BIN)/python bench/demo_memory.py
	$(BIN)/python bench/readme_numbers.py --collect-demo --collect-demo-lora

## Training speed against the course recipe and TRL's SFTTrainer, generation speed against the per-example loop,
## MFU (~45 min on 2 cores; installs TRL, a bench-only dependency); then the README's speed tables.
throughput: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/readme_numbers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
