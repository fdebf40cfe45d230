#!/usr/bin/env bash
# Static check of the oldest Python the hosts may run (README: 3.8): vermin over everything that
# runs on a host: the engine (plugins/module_utils, shipped as is), the modules, and the CLI the
# role installs. Fails on any construct, module or member newer than that. vermin sees names,
# not types (`x.removeprefix` on a variable passes); Molecule runs the code on 3.9, 3.11, 3.13.
set -euo pipefail

MIN=3.8
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATH=$ROOT/.venv/bin:$PATH
cd "$ROOT"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The CLI is a Jinja template: check the Python it renders to, rendered by Ansible itself (the
# `comment` filter, ansible_managed) with the role's defaults.
ansible localhost -i localhost, -c local \
    -e 'ansible_python_interpreter={{ ansible_playbook_python }}' \
    -e @roles/snapshot_jobs/defaults/main.yml \
    -m ansible.builtin.template \
    -a "src=roles/snapshot_jobs/templates/fslinks-snapshot.j2 dest=$out/fslinks-snapshot.j2-rendered.py" >/dev/null

# --eval-annotations: an annotation such as list[int] counts even under
# `from __future__ import annotations` (stricter than needed, never looser).
vermin -t="$MIN"- --no-tips --violations --eval-annotations \
    plugins/module_utils plugins/modules "$out/fslinks-snapshot.j2-rendered.py"
echo "pyversions: the engine, the modules and the CLI need no Python newer than $MIN"
