# Conveyor developer tasks. `make demo` and `make test` are all a newcomer needs.
#
# `setup` is idempotent: it creates .venv if missing and installs the package (editable, with the
# dev tools) only when pyproject.toml is newer than the last install, so repeated runs are instant.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The [ml] extra's torch, named in the same pip call so pip takes the local CPU build and never
# resolves a CUDA one. Keep in step with pyproject.toml.
TORCH  := torch==2.13.0
# bench/ is optional so that lint works before the benchmarks exist.
LINT_PATHS := src tests $(wildcard bench)

.DEFAULT_GOAL := help
.PHONY: help setup chromium demo demo-ml test lint imports typecheck pytest bench bench-quick clean distclean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'

setup: $(STAMP) chromium ## Create .venv and install Conveyor with its dev tools and models (fast when up to date)

# The browser tests drive Debian's chromium through Playwright (no browser download). A no-op when
# it is there; otherwise apt-get (as root). If that fails, the browser tests skip locally and fail in CI.
chromium: ## Install Debian's chromium for the browser tests when /usr/bin/chromium is missing
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "warning: could not install chromium; the browser tests will be skipped (failed under CI=true)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH)' -e '.[dev,ml]'
	@touch $(STAMP)

demo: setup ## Start a server, classify held-out handwritten digits with live progress, report accuracy
	$(BIN)/conveyor demo

demo-ml: setup ## Start a server, classify real bundled photos with imagenet-classifier, save thumbnails
	$(BIN)/conveyor demo-ml

test: setup ## Lint, type-check, check the import layers and run the whole test suite
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: setup ## ruff
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

imports: setup ## import-linter: the one-way layer contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/lint-imports

typecheck: setup ## mypy (configured in pyproject.toml)
	$(BIN)/mypy

pytest: setup ## Only the tests
	$(BIN)/python -m pytest -q

bench: setup ## All benchmarks (~1 h on 2 cores): bench/results/*.json, docs/benchmarks.md and its plots
	$(BIN)/python bench/run_all.py

bench-quick: setup ## All benchmarks at small sizes (~13 min), rendered into bench/results/ only
	$(BIN)/python bench/run_all.py --quick

clean: ## Remove caches, build files and the demo's data directory (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache build dist src/*.egg-info conveyor-data bench/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
