#!/usr/bin/env bash
# What `make bench` needs on top of `make setup`: strace and GNU time (for bench/profile.py)
# and matplotlib in .venv. Idempotent; pip runs again only when bench/requirements.txt changes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages "bench setup" strace time rsync btrfs-progs xfsprogs e2fsprogs coreutils

ensure_requirements "bench setup" bench/requirements.txt .venv/.requirements-bench.sha256
