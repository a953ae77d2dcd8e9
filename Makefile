# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on disk here; install it before anything else so no requirement
# can pull a multi-GB CUDA build. Elsewhere, point pip at a CPU index with TORCH_PIP_ARGS.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup test lint demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

demo: setup
	$(VENV)/bin/hjprune demo --output-dir outputs/demo

clean:
	rm -rf $(VENV) outputs .pytest_cache
