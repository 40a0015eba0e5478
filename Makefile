# conveyor: `make demo` runs the main flow, `make test` runs every check, `make bench` measures.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck unit bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(PIP) install -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.test pyproject.toml
	$(PIP) install -e '.[test,bench]'
	touch $@

demo: $(VENV)/.base
	bash scripts/demo.sh

lint: $(VENV)/.test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(VENV)/.test
	$(VENV)/bin/mypy src

unit: $(VENV)/.test
	$(PY) -m pytest tests/unit -q

test: lint typecheck $(VENV)/.test
	$(PY) -m pytest -q

bench: $(VENV)/.bench
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache demo bench-data
