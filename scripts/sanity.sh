#!/usr/bin/env bash
# ansible-test sanity, offline and without Docker.
# ansible-test needs the tree at .../ansible_collections/NAMESPACE/NAME and resolves symlinks,
# so it runs on a copy. Extra arguments go to ansible-test (e.g. --test pep8).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
PATH=$VENV/bin:$PATH
PY=$VENV/bin/python
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# --venv bootstraps pip in each new venv with a get-pip script that ansible-test downloads from
# a host we cannot reach; it uses ~/.ansible/test/cache/get_pip_<X_Y>.py when present. Read the
# pip version this ansible-test wants and provide a stand-in: ensurepip, then pip==<X.Y>.
PIPVER=$("$PY" - <<'EOF'
import pathlib, re, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / '_internal/python_requirements.py').read_text()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
EOF
)
GETPIP=$HOME/.ansible/test/cache/get_pip_${PIPVER//./_}.py
if ! grep -q 'fslinks offline get-pip' "$GETPIP" 2>/dev/null; then
    mkdir -p "$(dirname "$GETPIP")"
    cat >"$GETPIP" <<'EOF'
# fslinks offline get-pip: stands in for ansible-test's downloaded get-pip script.
# ansible-test runs it with pip-install arguments, e.g. "pip==24.2 --no-setuptools --no-wheel".
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q'] + args)
EOF
fi

# Copy what git would ship (tracked + untracked-not-ignored); plain rsync when not in git.
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/fslinks-sanity.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DEST=$WORK/ansible_collections/fslinks/snapshots
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
copy_shipped_tree "$DEST"

cd "$DEST"
rc=0
ansible-test sanity --venv --python "$PYVER" --color no "$@" || rc=$?
# Keep the reports (tests/output/) in the checkout for a look after a failure.
if [[ -d tests/output ]]; then
    mkdir -p "$ROOT/tests/output"
    rsync -a tests/output/ "$ROOT/tests/output/"
fi
exit "$rc"
