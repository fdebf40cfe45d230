#!/usr/bin/env bash
# Prepare a development/CI machine: system tools, .venv, and the collection "installed" as a
# symlink under .collections. Idempotent; a second run takes well under a second.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# 1. System tools the loop-filesystem tests and the engine rely on, and shellcheck (used by
#    ansible-test sanity). Install only what is missing.
PKGS=(xfsprogs btrfs-progs rsync attr acl e2fsprogs util-linux shellcheck)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing packages ${missing[*]} and not root; install them first" >&2
        exit 1
    fi
    echo "setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have empty or stale package lists: update once, then retry.
    apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi

# 2. Virtualenv with the dev tools; pip runs again only when requirements-dev.txt changes.
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
STAMP=.venv/.requirements-dev.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
    echo "setup: pip install -r requirements-dev.txt"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$want" >"$STAMP"
fi

# 3. Development install: Ansible finds the collection through this symlink to the checkout
#    (relative, so the clone can move). The Makefile points ANSIBLE_COLLECTIONS_PATH here.
LINK=.collections/ansible_collections/fslinks/snapshots
mkdir -p "$(dirname "$LINK")"
if [[ ! -L $LINK || $(readlink "$LINK") != ../../.. ]]; then
    rm -rf "$LINK"
    ln -s ../../.. "$LINK"
fi
