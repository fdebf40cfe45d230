#!/usr/bin/env bash
# The role's Prometheus alert rules: `promtool check rules`, then the unit tests of
# tests/prometheus/ with `promtool test rules`. promtool comes from Debian's `prometheus` package,
# installed here when missing (as root). Without it: a failure under CI=true, a skip elsewhere.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RULES=roles/snapshot_jobs/files/fslinks-snapshots.rules.yml

if [[ $(id -u) -eq 0 ]]; then
    # shellcheck source=scripts/lib.sh
    source scripts/lib.sh
    ensure_packages alert-rules prometheus
fi
if ! command -v promtool >/dev/null; then
    if [[ ${CI:-} == true ]]; then
        echo "alert-rules: no promtool (Debian package prometheus); run as root to install it" >&2
        exit 1
    fi
    echo "alert-rules: SKIPPED, no promtool (Debian package prometheus; run as root to install it)"
    exit 0
fi
promtool check rules "$RULES"
promtool test rules tests/prometheus/*.test.yml
