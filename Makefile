# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml setup.py stream/_cells.pyx | $(BIN)/python
	bash tools/compiler/install.sh $(BIN)/python
	@echo "installing propstream and its dependencies into $(VENV) (a few minutes on a fresh machine)"
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/propstream demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) lint browser
	$(BIN)/python -m pytest

# Debian's chromium and chromium-driver for the browser test (installed only when missing; needs root).
browser:
	bash tools/browser/install.sh

bench: $(STAMP)
	$(BIN)/python bench/replay.py

clean:
	rm -rf $(VENV) propstream-data
