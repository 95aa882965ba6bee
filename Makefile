# Two front doors: `make train` runs the default job, `make test` runs the test suite.
# Both set up a virtual environment first, with the exact versions CI passed with: every install
# takes requirements/lock.txt as a constraints file (`make lock` refreshes it). On a machine
# without a CUDA GPU the CPU build of torch goes in before anything else, so that no multi-GB CUDA
# wheel is pulled in.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

# The lock: every package CI installs, at the version it passed with. torch is written without its
# local label (2.13.0, not 2.13.0+cpu), so the line fits a CUDA build of the same release too.
# What a CUDA build of torch pins itself (triton, NVIDIA's CUDA packages) is left to torch; the
# CPU-only pins (triton) are in LOCK_CPU, used only where the CPU build of torch went in.
LOCK     := requirements/lock.txt
LOCK_CPU := requirements/lock-cpu.txt
TORCH_VERSION ?= $(or $(shell sed -n 's/^torch==//p' $(LOCK) 2>/dev/null),2.13.0)

# PyTorch's index of CPU builds, tried only when pip finds no CPU build otherwise (PyPI has none
# for Linux; a local find-links directory may). Only torch itself comes from there (--no-deps: its
# dependencies come from PyPI with the rest, at the lock's versions), so that index is asked for
# one page and one wheel, with a short socket timeout and one retry: an unreachable index costs
# seconds, not a hang.
PYTORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_BOUNDED := --timeout 15 --retries 1

# $(call cpu_torch,PIP): the CPU build of torch without its dependencies, or a non-zero exit.
define cpu_torch
{ echo "no CUDA GPU: installing the CPU build of torch $(TORCH_VERSION)"; \
  $(1) install -q --no-deps $(PIP_BOUNDED) "torch==$(TORCH_VERSION)+cpu" 2>/dev/null || \
  { echo "no CPU build of torch $(TORCH_VERSION) among pip's sources; trying $(PYTORCH_CPU_INDEX)"; \
    $(1) install -q --no-deps $(PIP_BOUNDED) --index-url $(PYTORCH_CPU_INDEX) "torch==$(TORCH_VERSION)+cpu"; }; }
endef

.PHONY: setup train train-t5 test test-distributed test-gpu lock clean

# Rebuilt whenever pyproject.toml or the lock changes. The CPU-only pins apply only where the CPU
# build of torch went in; if it could not be had, torch comes from PyPI with the rest (on Linux
# x86_64 that is a CUDA build of several GB) and pins its own triton.
$(VENV)/.installed: pyproject.toml $(LOCK) $(LOCK_CPU)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) pip
	@set -e; constraints="-c $(LOCK)"; \
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
	    if $(call cpu_torch,$(PIP)); then constraints="$$constraints -c $(LOCK_CPU)"; \
	    else echo "warning: no CPU build of torch reachable; torch comes from PyPI"; fi; \
	fi; \
	echo "installing the project with its test extra, constrained by $$constraints"; \
	$(PIP) install -q $$constraints -e '.[test]'
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) scripts/prepare_default_corpus.py
	$(PY) scripts/train.py --config-name=megatron_gpt_config +preset=cpu_default

train-t5: setup
	$(PY) scripts/prepare_default_corpus.py
	$(PY) scripts/train.py --config-name=megatron_t5_config +preset=t5/cpu_default

# pytest's exit 5 (no test collected) is no failure. The slowest tests are listed, so that a
# CI log shows where the suite's time goes.
define run_pytest
$(PY) -m pytest -q --durations=15 $(1) tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc
endef

# The suite runs in TEST_WORKERS pytest-xdist processes, each with its share of torch's threads
# (tests/conftest.py): on CI's 2 cores, 2 take it from 15 to 7 minutes (most tests are tiny
# models, bound by Python rather than by torch's threads).
# The multi-process tests (gloo on the CPU: 2 and 4 processes each) follow as a second step, one
# at a time.
TEST_WORKERS ?= 2

test: setup
	$(call run_pytest,-n $(TEST_WORKERS) -m "not distributed")
	$(call run_pytest,-m distributed)

test-distributed: setup
	$(call run_pytest,-m distributed)

test-gpu: setup
	$(PY) -m pytest -q -m gpu tests

# Refresh the lock: a fresh temporary venv, the CPU build of torch $(TORCH_VERSION) (as CI has;
# `make lock TORCH_VERSION=x.y.z` moves it), then the project with all its extras and no
# constraints, so every other package comes at the newest version pyproject.toml allows; then
# `pip freeze`. Run `make test` afterwards and commit both files if it passes.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; pip="$$tmp/venv/bin/python -m pip"; \
	$$pip install -q --upgrade pip; \
	$(call cpu_torch,$$pip); \
	$$pip install -q -e '.[dev]'; \
	$$pip freeze --all --exclude-editable > "$$tmp/freeze.txt"; \
	made="# Made by \`make lock\` on $$(date -u +%Y-%m-%d) with $$("$$tmp/venv/bin/python" -c 'import platform as p; print(f"CPython {p.python_version()} on {p.system()} {p.machine()}")'):"; \
	how="# a fresh venv, the CPU build of torch $(TORCH_VERSION), then \`pip install -e '.[dev]'\` unconstrained, then \`pip freeze --all\`."; \
	{ echo "# The exact versions CI passed with; \`make setup\` (so \`make train\`, \`make test\`, .ci/run)"; \
	  echo "# installs with \`-c requirements/lock.txt\`. Refresh: \`make lock\`, then \`make test\`, commit."; \
	  echo "$$made"; echo "$$how"; \
	  echo "# torch without its local label (+cpu), so the line fits a CUDA build of the same release."; \
	  echo "# Left out, for torch to pin: triton and NVIDIA's CUDA packages (CPU pins: lock-cpu.txt)."; \
	  grep -viE '^(#|-e |megatron[-_.]lite[= ]|triton==|nvidia-|cuda-)' "$$tmp/freeze.txt" | sed -E 's/^(torch==[^+]*)\+.*/\1/'; \
	} > $(LOCK); \
	{ echo "# Pins for a machine with the CPU build of torch only (a CUDA build of torch pins its own"; \
	  echo "# triton); \`make setup\` adds \`-c requirements/lock-cpu.txt\` there. Made with lock.txt by \`make lock\`."; \
	  grep -iE '^triton==' "$$tmp/freeze.txt"; \
	} > $(LOCK_CPU); \
	echo "wrote $(LOCK) ($$(grep -vc '^#' $(LOCK)) packages) and $(LOCK_CPU)"

clean:
	rm -rf $(VENV) .pytest_cache
