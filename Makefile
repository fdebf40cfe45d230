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
# make bench-pull BENCH_PULL_ARGS='--image-size 64M --files 2000 --days 3 --fs xfs' for a quick run
BENCH_PULL_ARGS ?=

.PHONY: help setup test pytest sanity build-check molecule demo lint changelog-lint clean bench bench-pull bench-ab bench-profile fleet
.PHONY: docs docs-lint alert-rules

help:
	@echo "make setup        system packages, .venv, .collections symlink (idempotent)"
	@echo "make test         pytest, sanity, pyversions, build-check, molecule, lint, docs-lint, alert-rules (what CI runs)"
	@echo "make pytest       only the pytest suite (PYTEST_ARGS='-k xfs -x' to narrow it)"
	@echo "make sanity       only ansible-test sanity (offline, on a copy of the tree)"
	@echo "make pyversions   what runs on hosts (engine, modules, CLI) needs no Python newer than 3.8"
	@echo "make build-check  build the tarball, install it, ansible-doc every module"
	@echo "make molecule     Molecule scenarios on containers with ext4/XFS/btrfs data (root, docker)"
	@echo "                  (MOLECULE_SCENARIOS='modules' to pick; scripts/molecule.sh SCENARIO CMD)"
	@echo "make demo         scripts/demo.sh"
	@echo "make lint         ansible-lint (once roles/ exists)"
	@echo "make alert-rules  promtool check and unit tests of the role's Prometheus alert rules (part of make test)"
	@echo "make docs-lint    antsibull-docs lint of the modules' and the role's docs (part of make test)"
	@echo "make docs         HTML docs site (antsibull-docs + Sphinx, offline) -> tests/output/docs/build/html"
	@echo "make bench        benchmark vs rsync/cp/btrfs (root, ~30 min; BENCH_ARGS=...) -> docs/benchmarks.md,"
	@echo "                  then bench/pull.py (docs/benchmarks-pull.md)"
	@echo "make bench-pull   only the pull benchmark: 10 daily pulls over ssh vs rsnapshot's method"
	@echo "                  (root, ~35 min; BENCH_PULL_ARGS=...) -> docs/benchmarks-pull.md (make bench runs it too)"
	@echo "make bench-ab     this engine against another checkout (AB_BASELINE=DIR), interleaved"
	@echo "make bench-profile  cProfile + strace -c of the hardlink method (PROFILE_ARGS='--fs xfs')"
	@echo "make reliability  long fault-injection run (root, ~15 min) -> docs/reliability.md (make test runs it short)"
	@echo "make fleet        the role on 30 containers, timed against ping (root, docker, ~20 min) -> docs/fleet.md"
	@echo "make clean        remove build and test output (keeps .venv)"

setup:
	@scripts/setup.sh

# Runs every part even when one fails, so one CI run reports everything; fails if any did.
test: setup
	@rc=0; \
	$(MAKE) --no-print-directory pytest || rc=1; \
	$(MAKE) --no-print-directory sanity || rc=1; \
	$(MAKE) --no-print-directory pyversions || rc=1; \
	$(MAKE) --no-print-directory build-check || rc=1; \
	$(MAKE) --no-print-directory molecule || rc=1; \
	$(MAKE) --no-print-directory lint || rc=1; \
	$(MAKE) --no-print-directory docs-lint || rc=1; \
	$(MAKE) --no-print-directory alert-rules || rc=1; \
	if ((rc)); then echo "make test: FAILED (see above)" >&2; fi; \
	exit $$rc

pytest: setup
	pytest $(PYTEST_ARGS)

sanity: setup
	scripts/sanity.sh

# Static (vermin): the README promises Python 3.8 on hosts; Molecule runs 3.9, 3.11 and 3.13.
.PHONY: pyversions
pyversions: setup
	scripts/pyversions.sh

build-check: setup
	scripts/build-check.sh

# Each scenario on its own containers and loop filesystems (scripts/molecule.sh sets up the
# Docker daemon and images through scripts/testbed.sh and always tears its run down).
MOLECULE_SCENARIOS ?= default modules pull
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
	python bench/pull.py $(BENCH_PULL_ARGS)

# Daily pulls over a private sshd on 127.0.0.1, ours against rsnapshot's method (bench/pull.py).
bench-pull: setup
	python bench/pull.py $(BENCH_PULL_ARGS)

# make bench-ab AB_BASELINE=../base AB_ARGS='--files 30000 --reps 5': this engine against another
# checkout, interleaved, median of per-round ratios (bench/ab.py)
AB_BASELINE ?=
AB_ARGS ?=
bench-ab: setup
	bench/setup.sh
	@[[ -n "$(AB_BASELINE)" ]] || { echo "make bench-ab: give AB_BASELINE=DIR (a checkout to compare with)" >&2; exit 2; }
	python bench/ab.py --baseline "$(AB_BASELINE)" $(AB_ARGS)

PROFILE_ARGS ?=
bench-profile: setup
	bench/setup.sh
	python bench/profile.py $(PROFILE_ARGS)

# The long form of tests/reliability (RELIABILITY_LONG=1: 60+ SIGKILLs, swept ENOSPC, races,
# hostile input, fuzzing); its tally becomes docs/reliability.md, written only when every test
# passed (else the page goes to tests/output/reliability/ and the target fails).
RELIABILITY_RESULTS := $(CURDIR)/tests/output/reliability/results-long.json
reliability: setup
	@rc=0; RELIABILITY_LONG=1 RELIABILITY_RESULTS=$(RELIABILITY_RESULTS) pytest tests/reliability $(PYTEST_ARGS) || rc=$$?; \
	if ((rc == 0)); then python tests/reliability/render.py $(RELIABILITY_RESULTS) docs/reliability.md; \
		echo "make reliability: docs/reliability.md written"; \
	else echo "make reliability: FAILED; docs/reliability.md left alone, see $(RELIABILITY_RESULTS:.json=.md)" >&2; fi; \
	exit $$rc

# Not part of `make test` (too slow for CI): the role on FLEET_HOSTS (30) containers sharing
# three loop filesystems, converge / re-converge / a triggered snapshot timed against a bare ping
# with FLEET_FORKS (10) forks, controller memory; docs/fleet.md is written only if all passed.
fleet: setup
	scripts/fleet.sh

# Markup, references and schema of every module's DOCUMENTATION and the role's argument specs.
docs-lint: setup
	antsibull-docs lint-collection-docs --plugin-docs . && echo "docs-lint: no findings"

docs: setup
	scripts/docs.sh

# The role's Prometheus alert rules: promtool check rules and the unit tests in tests/prometheus/.
alert-rules: setup
	scripts/alert-rules.sh

changelog-lint: setup
	antsibull-changelog lint

clean:
	rm -rf tests/output .pytest_cache .hypothesis *.tar.gz
	find . -path ./.venv -prune -o -path ./.collections -prune -o -name __pycache__ -type d -exec rm -rf {} +
