# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_ID := $(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo demo-lora test test-fast bench clean

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
## task gain, forgetting and cost, in runs/dialogsum-compare/report.html (~15-20 min on 2 CPU cores).
## Finished arms are reused when run again.
demo: setup
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/tunelab compare configs/compare_dialogsum.yaml

## One run: zero-shot eval, LoRA fine-tune, eval again, before/after table (~8 min on 2 CPU cores).
demo-lora: setup
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/tunelab train configs/dialogsum_lora.yaml --set name=dialogsum-lora-$(RUN_ID)

## Lint (bug-catching rules), then the whole test suite, the real-model tests included (pulls smollm2-135m-instruct once).
test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/tunelab models pull smollm2-135m-instruct
	$(BIN)/python -m pytest -q

## Unit tests on tiny models only (no model download).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
