# Development entry points. Everything runs from .venv (made by `make setup`) against the
# collection as installed through the .collections/ symlink.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export PATH := $(CURDIR)/.venv/bin:$(PATH)

PYTEST_ARGS ?=

.PHONY: help setup test pytest sanity build-check demo lint changelog-lint clean

help:
	@echo "make setup        system packages, .venv, .collections symlink (idempotent)"
	@echo "make test         pytest + ansible-test sanity + galaxy build/install check (what CI runs)"
	@echo "make pytest       only the pytest suite (PYTEST_ARGS='-k xfs -x' to narrow it)"
	@echo "make sanity       only ansible-test sanity (offline, on a copy of the tree)"
	@echo "make build-check  build the tarball, install it, ansible-doc every module"
	@echo "make demo         scripts/demo.sh"
	@echo "make lint         ansible-lint (once roles/ exists)"
	@echo "make clean        remove build and test output (keeps .venv)"

setup:
	@scripts/setup.sh

# Runs all three parts even when one fails, so one CI run reports everything; fails if any did.
test: setup
	@rc=0; \
	$(MAKE) --no-print-directory pytest || rc=1; \
	$(MAKE) --no-print-directory sanity || rc=1; \
	$(MAKE) --no-print-directory build-check || rc=1; \
	$(MAKE) --no-print-directory lint || rc=1; \
	if ((rc)); then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

pytest: setup
	pytest $(PYTEST_ARGS)

sanity: setup
	scripts/sanity.sh

build-check: setup
	scripts/build-check.sh

demo: setup
	bash scripts/demo.sh

lint: setup
	@if [[ -d roles ]]; then ansible-lint --profile production; \
	else echo "lint: no roles/ yet, nothing to lint"; fi

changelog-lint: setup
	antsibull-changelog lint

clean:
	rm -rf tests/output .pytest_cache .hypothesis *.tar.gz
	find . -path ./.venv -prune -o -path ./.collections -prune -o -name __pycache__ -type d -exec rm -rf {} +
