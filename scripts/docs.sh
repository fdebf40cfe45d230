#!/usr/bin/env bash
# The HTML docs site of the collection, as docs.ansible.com renders collections: antsibull-docs
# writes RST from the modules' DOCUMENTATION and the role's argument specs, Sphinx makes HTML.
# Offline: nothing is fetched (no intersphinx inventories, no Galaxy). Output in DOCS_DIR
# (default tests/output/docs, git-ignored); the site is DOCS_DIR/build/html/index.html.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATH=$ROOT/.venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$ROOT/.collections}
OUT=${DOCS_DIR:-$ROOT/tests/output/docs}

# antsibull-docs wants its directories owned by us and writable by nobody else.
rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")" && mkdir -m 700 "$OUT"
antsibull-docs sphinx-init --use-current --dest-dir "$OUT" --fail-on-error \
    --project fslinks.snapshots --copyright 'fslinks.snapshots contributors' \
    --title 'fslinks.snapshots' fslinks.snapshots >/dev/null

# The collection is not on Galaxy: say how it really installs (README.md, Install).
REPO=$(sed -n 's/^repository: *//p' "$ROOT/galaxy.yml")
cat >"$OUT/antsibull-docs.cfg" <<EOF
breadcrumbs = true
indexes = true
use_html_blobs = false
add_antsibull_docs_version = true
collection_url = {
  * = "$REPO"
}
collection_install = {
  * = "ansible-galaxy collection build && ansible-galaxy collection install {namespace}-{name}-*.tar.gz"
}
EOF

# No intersphinx: its inventories would be downloaded. References into the Ansible docsite
# (ansible.builtin modules, common return values, configuration) stay plain text; every other
# dangling reference still fails the build.
cat >>"$OUT/conf.py" <<'EOF'

# Offline build (scripts/docs.sh).
extensions.remove('sphinx.ext.intersphinx')
nitpick_ignore_regex = [
    ('ref', r'ansible_collections\.ansible\.builtin\..*'),
    ('ref', r'common_return_values|ansible_configuration_settings'),
]
EOF

chmod og-w "$OUT/rst"   # made by sphinx-init, holding its index.rst
antsibull-docs --config-file "$OUT/antsibull-docs.cfg" collection --use-current --fail-on-error \
    --cleanup everything --dest-dir "$OUT/rst" fslinks.snapshots
sphinx-build -M html "$OUT/rst" "$OUT/build" -c "$OUT" -W --keep-going -q
echo "docs: $OUT/build/html/index.html"
