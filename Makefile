# The README's two commands are `make demo` and `make test`; both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo run test lint typecheck fuzz bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/handoff demo

run: $(STAMP)
	$(BIN)/handoff run

lint: $(STAMP)
	$(BIN)/ruff check schemas adapters broker tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/unit/test_fuzz.py

bench: $(STAMP)
	$(BIN)/handoff bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
