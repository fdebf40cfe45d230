#!/usr/bin/env bash
# Build the collection tarball, install it somewhere empty, and make sure ansible-doc can read
# every module from that install: catches build_ignore mistakes, missing files and broken docs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATH=$ROOT/.venv/bin:$PATH
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/fslinks-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

ansible-galaxy collection build "$ROOT" --output-path "$WORK/dist" >/dev/null
TARBALL=$(echo "$WORK"/dist/fslinks-snapshots-*.tar.gz)
echo "built $(basename "$TARBALL") ($(du -k "$TARBALL" | cut -f1) KiB, $(tar tzf "$TARBALL" | wc -l) entries)"

# Development and CI leftovers must never ship.
if leaked=$(tar tzf "$TARBALL" | grep -E '^(\./)?(\.venv|\.collections|\.git|tests/output|\.pytest_cache|\.hypothesis)(/|$)|__pycache__|\.pyc$'); then
    echo "build-check: tarball contains files that build_ignore should drop:" >&2
    echo "$leaked" | head -20 >&2
    exit 1
fi

# Only the fresh install may be visible: with the dev symlink on the path, ansible-galaxy would
# say "already installed" and skip the install.
export ANSIBLE_COLLECTIONS_PATH=$WORK/installed
ansible-galaxy collection install --offline --force "$TARBALL" -p "$WORK/installed" >"$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log" >&2; exit 1; }
INSTALLED=$WORK/installed/ansible_collections/fslinks/snapshots
[[ -f $INSTALLED/MANIFEST.json ]] || { echo "build-check: nothing installed at $INSTALLED" >&2; exit 1; }

# The modules the collection promises, plus whatever else is there.
modules=(reflink_copy link_facts)
for f in "$INSTALLED"/plugins/modules/*.py; do
    [[ -e $f ]] || continue
    m=$(basename "$f" .py)
    [[ $m == __init__ || " ${modules[*]} " == *" $m "* ]] || modules+=("$m")
done

rc=0
for m in "${modules[@]}"; do
    # ansible-doc exits 0 with only a warning for a module it cannot find or load: check the JSON.
    if ansible-doc --json -t module "fslinks.snapshots.$m" 2>"$WORK/err" \
        | python -c 'import json,sys; d=json.loads(sys.stdin.read() or "{}"); sys.exit(not any(v.get("doc") for v in d.values()))'; then
        echo "ansible-doc fslinks.snapshots.$m: ok"
    else
        echo "ansible-doc fslinks.snapshots.$m: FAILED" >&2
        cat "$WORK/err" >&2
        rc=1
    fi
done
exit "$rc"
