# Development entry points. Everything runs from .venv (made by `make setup`) against the
# collection as installed through the .collections/ symlink.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export PATH := $(CURDIR)/.venv/bin:$(PATH)

PYTEST_ARGS ?=
# make bench BENCH_ARGS='--files 10000 --fs xfs --no-ansible' for a quick partial run
BENCH_ARGS ?=

.PHONY: help setup test pytest sanity build-check molecule demo lint changelog-lint clean bench bench-profile

help:
	@echo "make setup        system packages, .venv, .collections symlink (idempotent)"
	@echo "make test         pytest, sanity, build-check, molecule, lint (what CI runs)"
	@echo "make pytest       only the pytest suite (PYTEST_ARGS='-k xfs -x' to narrow it)"
	@echo "make sanity       only ansible-test sanity (offline, on a copy of the tree)"
	@echo "make build-check  build the tarball, install it, ansible-doc every module"
	@echo "make molecule     Molecule scenarios on containers with ext4/XFS/btrfs data (root, docker)"
	@echo "                  (MOLECULE_SCENARIOS='modules' to pick; scripts/molecule.sh SCENARIO CMD)"
	@echo "make demo         scripts/demo.sh"
	@echo "make lint         ansible-lint (once roles/ exists)"
	@echo "make bench        benchmark vs rsync/cp/btrfs (root, ~30 min; BENCH_ARGS=...) -> docs/benchmarks.md"
	@echo "make bench-profile  cProfile + strace -c of the hardlink method (PROFILE_ARGS='--fs xfs')"
	@echo "make clean        remove build and test output (keeps .venv)"

setup:
	@scripts/setup.sh

# Runs every part even when one fails, so one CI run reports everything; fails if any did.
test: setup
	@rc=0; \
	$(MAKE) --no-print-directory pytest || rc=1; \
	$(MAKE) --no-print-directory sanity || rc=1; \
	$(MAKE) --no-print-directory build-check || rc=1; \
	$(MAKE) --no-print-directory molecule || rc=1; \
	$(MAKE) --no-print-directory lint || rc=1; \
	if ((rc)); then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

pytest: setup
	pytest $(PYTEST_ARGS)

sanity: setup
	scripts/sanity.sh

build-check: setup
	scripts/build-check.sh

# Each scenario on its own containers and loop filesystems (scripts/molecule.sh sets up the
# Docker daemon and images through scripts/testbed.sh and always tears its run down).
MOLECULE_SCENARIOS ?= default modules
molecule: setup
	@rc=0; \
	for s in $(MOLECULE_SCENARIOS); do scripts/molecule.sh "$$s" test || rc=1; done; \
	if ((rc)); then echo "make molecule: FAILED (see above)" >&2; fi; \
	exit $$rc

demo: setup
	bash scripts/demo.sh

lint: setup
	@if [[ -d roles ]]; then ansible-lint --profile production; \
	else echo "lint: no roles/ yet, nothing to lint"; fi

# Not part of `make test`: timings are reported, never asserted (tests/functional/test_bench_smoke.py
# only checks that the script runs).
bench: setup
	bench/setup.sh
	python bench/run.py $(BENCH_ARGS)

PROFILE_ARGS ?=
bench-profile: setup
	bench/setup.sh
	python bench/profile.py $(PROFILE_ARGS)

changelog-lint: setup
	antsibull-changelog lint

clean:
	rm -rf tests/output .pytest_cache .hypothesis *.tar.gz
	find . -path ./.venv -prune -o -path ./.collections -prune -o -name __pycache__ -type d -exec rm -rf {} +
