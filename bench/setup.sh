#!/usr/bin/env bash
# What `make bench` needs on top of `make setup`: strace and GNU time (for bench/profile.py)
# and matplotlib in .venv. Idempotent; pip runs again only when bench/requirements.txt changes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PKGS=(strace time rsync btrfs-progs xfsprogs e2fsprogs coreutils)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench setup: missing packages ${missing[*]} and not root; install them first" >&2
        exit 1
    fi
    echo "bench setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi

STAMP=.venv/.requirements-bench.sha256
want=$(sha256sum bench/requirements.txt | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
    echo "bench setup: pip install -r bench/requirements.txt"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt
    echo "$want" >"$STAMP"
fi
