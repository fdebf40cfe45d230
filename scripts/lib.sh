# shellcheck shell=bash
# Shared by scripts/setup.sh, scripts/testbed.sh and bench/setup.sh (sourced, not run).

# ensure_packages LABEL PKG...: apt-get install the packages that are missing, as root.
ensure_packages() {
    local label=$1 p
    shift
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "$label: missing packages ${missing[*]} and not root; install them first" >&2
        return 1
    fi
    echo "$label: apt-get install ${missing[*]}"
    # A fresh machine may have empty or stale package lists: update once, then retry.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
}

# ensure_requirements LABEL FILE STAMP: pip install -r FILE into .venv when FILE changed.
ensure_requirements() {
    local label=$1 file=$2 stamp=$3 want
    want=$(sha256sum "$file" | cut -d' ' -f1)
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
        echo "$label: pip install -r $file"
        .venv/bin/python -m pip install -q --disable-pip-version-check -r "$file"
        echo "$want" >"$stamp"
    fi
}
