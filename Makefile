# Two commands on a fresh machine: `make sweep` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

MODEL  ?=
TRIALS ?=
STORAGE ?=
PORT   ?= 8080

export TOKENIZERS_PARALLELISM ?= false
ifeq ($(MODEL),)
STUDY ?= studies/demo.yaml
# The demo and the tests run offline, with caches inside the project.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_HOME ?= $(CURDIR)/.cache/huggingface
else
STUDY ?= studies/paper.yaml
endif

WORKERS ?= 1
SWEEP_ARGS := $(STUDY) $(if $(MODEL),--model $(MODEL)) $(if $(TRIALS),--trials $(TRIALS)) \
              $(if $(STORAGE),--storage $(STORAGE)) --workers $(WORKERS)

.PHONY: install sweep test lint dashboard status demo-model bench bench-engine bench-search clean

install: $(STAMP)

# Re-installs only when pyproject.toml or constraints.txt change. torch goes first, from the pin.
$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

sweep: $(STAMP)
	$(VENV)/bin/sweep run $(SWEEP_ARGS)

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check sweep tests bench
	$(VENV)/bin/ruff format --check sweep tests bench

status: $(STAMP)
	$(VENV)/bin/sweep status $(STUDY) $(if $(STORAGE),--storage $(STORAGE))

dashboard: $(STAMP)
	$(VENV)/bin/sweep dashboard $(STUDY) $(if $(STORAGE),--storage $(STORAGE)) --port $(PORT)

# Benchmarks print ratios measured side by side in one run, and write bench-results/*.json.
bench: bench-engine bench-search

bench-engine: $(STAMP)
	$(PY) -m bench.engine

bench-search: $(STAMP)
	$(PY) -m bench.search

# Regenerates the demo corpus, tasks and model (about 10 minutes on 2 CPU cores).
demo-model: $(STAMP)
	$(PY) -m sweep.demo.build

clean:
	rm -rf $(VENV) .cache
