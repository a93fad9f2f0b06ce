# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ready
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/metatune demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/engine.py --quick
	$(PY) benchmarks/robots.py --quick
	$(PY) benchmarks/hmr.py --quick
	$(PY) benchmarks/relight.py --quick
	$(PY) benchmarks/relight_starts.py --quick
	$(PY) benchmarks/cli.py
	$(PY) benchmarks/meta_training.py --quick

clean:
	rm -rf runs .pytest_cache
