#!/usr/bin/env bash
# Prepare a development/CI machine: system tools, .venv, and the collection "installed" as a
# symlink under .collections. Idempotent; a second run takes well under a second.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# 1. System tools the loop-filesystem tests and the engine rely on, and shellcheck (used by
#    ansible-test sanity). Install only what is missing.
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
ensure_packages setup xfsprogs btrfs-progs rsync attr acl e2fsprogs util-linux shellcheck
# sshd for the pull tests (a private sshd on 127.0.0.1 per test session): installed without
# starting Debian's ssh service (policy-rc.d says no for the length of the install).
if ! dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q 'install ok installed'; then
    own_policy=
    if [[ ! -e /usr/sbin/policy-rc.d && $(id -u) -eq 0 ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    ensure_packages setup openssh-server openssh-client || { [[ -z $own_policy ]] || rm -f /usr/sbin/policy-rc.d; exit 1; }
    [[ -z $own_policy ]] || rm -f /usr/sbin/policy-rc.d
fi

# 2. Virtualenv with the dev tools; pip runs again only when requirements-dev.txt changes.
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
ensure_requirements setup requirements-dev.txt .venv/.requirements-dev.sha256

# 3. Development install: Ansible finds the collection through this symlink to the checkout
#    (relative, so the clone can move). The Makefile points ANSIBLE_COLLECTIONS_PATH here.
LINK=.collections/ansible_collections/fslinks/snapshots
mkdir -p "$(dirname "$LINK")"
if [[ ! -L $LINK || $(readlink "$LINK") != ../../.. ]]; then
    rm -rf "$LINK"
    ln -s ../../.. "$LINK"
fi
