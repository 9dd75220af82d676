# Two commands on a fresh clone:
#   make up     install (first time) and start the whole system embedded
#   make test   install (first time) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test lint bench install clean

$(STAMP): pyproject.toml setup.py producers/_hotpath.c package.json
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned and installed first so pip never resolves a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[server,dev,torch]"
	# Browser code (uPlot) comes from npm into node_modules/ and is served from there.
	npm install --no-audit --no-fund
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/runstream up $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check runstream producers streams sinks ui tests bench examples
	$(VENV)/bin/ruff format --check runstream producers streams sinks ui tests bench examples docs
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/codec.py
	$(PY) bench/broker.py
	$(PY) bench/idle.py
	$(PY) bench/sdk.py
	$(PY) bench/capture.py
	$(PY) bench/storage.py
	$(PY) bench/sink.py
	$(PY) bench/e2e.py
	$(PY) bench/streams.py
	$(PY) bench/loss_spike.py
	$(PY) bench/overhead.py
	$(PY) bench/redact.py
	$(PY) bench/ui_fresh.py

clean:
	rm -rf $(VENV) .pytest_cache
