# kelly's commands. `make test` and `make reports` work on a fresh machine with only Python 3.11:
# they create .venv, install torch==2.13.0 (the CPU wheel) first, then kelly with its dev tools; as root they also
# install Debian's chromium for the browser tests (Playwright drives it; nothing downloads a browser) and fluidsynth
# with a small General MIDI soundfont (timgm6mb) for rendering composed pieces.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kelly-installed
TORCH := torch==2.13.0

.PHONY: help setup test lint sync pytest nbtest reports docs lab export bench clean
.DEFAULT_GOAL := help

help: ## list the commands
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is missing and cannot be installed here: the browser tests (tests/test_browser.py) will fail"
	@test -f /usr/share/sounds/sf2/TimGM6mb.sf2 && command -v fluidsynth >/dev/null \
		|| { test "$$(id -u)" = 0 && apt-get update -qq \
		     && apt-get install -y -qq --no-install-recommends fluidsynth timgm6mb-soundfont >/dev/null; } \
		|| echo "fluidsynth or its GM soundfont is missing: kelly compose renders audio with sine tones instead"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv with torch 2.13.0 (CPU) and kelly in editable mode

test: setup ## every test: the linter, the notebook/package sync check, pytest, then every notebook (nbdev-test)
	$(MAKE) --no-print-directory lint sync pytest nbtest

lint: setup ## ruff on kelly/ and tests/ (rules in pyproject.toml): line length, one statement per line, unused names
	$(BIN)/ruff check kelly tests

sync: setup ## check that kelly/ is what nbdev-export makes of nbs/, and nbs/ is clean
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_sync.py

pytest: setup ## the pytest suite in tests/ (the sync check runs first, in `make sync`), two workers, one thread each
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests --ignore=tests/test_sync.py

nbtest: setup ## run every notebook at its quick defaults (one per core), one thread each
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
		$(BIN)/nbdev-test --do-print --timing

reports: setup ## regenerate every report at the sizes in settings.ini into reports/
	$(BIN)/kelly report all

docs: setup ## build the static docs site into _docs/
	$(BIN)/kelly docs

lab: setup ## JupyterLab on the notebooks
	$(BIN)/jupyter lab --notebook-dir=nbs

export: setup ## after editing notebooks: export kelly/, clean nbs/, write README.md
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/kelly docs --readme

bench: setup ## every benchmark, as JSON
	$(BIN)/kelly bench all --json

clean: ## remove generated files (keeps .venv)
	rm -rf _docs _proc .pytest_cache
	find reports -mindepth 1 ! -name README.md -exec rm -rf {} +
