# Two front doors: `make train` runs the default job, `make test` runs the test suite.
# Both set up a virtual environment first; on a machine without a CUDA GPU the CPU build of
# torch goes in before anything else, so that no multi-GB CUDA wheel is pulled in.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_CPU_VERSION ?= 2.13.0

.PHONY: setup train train-t5 test test-gpu clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
	    echo "no CUDA GPU: installing the CPU build of torch $(TORCH_CPU_VERSION)"; \
	    $(PY) -m pip install -q torch==$(TORCH_CPU_VERSION) || \
	    $(PY) -m pip install -q torch==$(TORCH_CPU_VERSION) --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) scripts/prepare_default_corpus.py
	$(PY) scripts/train.py --config-name=megatron_gpt_config +preset=cpu_default

train-t5: setup
	$(PY) scripts/prepare_default_corpus.py
	$(PY) scripts/train.py --config-name=megatron_t5_config +preset=t5/cpu_default

test: setup
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-gpu: setup
	$(PY) -m pytest -q -m gpu tests

clean:
	rm -rf $(VENV) .pytest_cache
