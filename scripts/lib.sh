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

# copy_shipped_tree DEST: copy what git would ship (tracked + untracked-not-ignored files) of the
# current directory to DEST; plain rsync without build artefacts when not in git.
copy_shipped_tree() {
    local dest=$1
    mkdir -p "$dest"
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard \
            | rsync -a --from0 --files-from=- --ignore-missing-args . "$dest/"
    else
        rsync -a --exclude .git --exclude .venv --exclude .collections --exclude tests/output \
            --exclude __pycache__ . "$dest/"
    fi
}
