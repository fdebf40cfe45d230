#!/usr/bin/env bash
# Fleet scale: the snapshot_jobs role on many containers from one controller, timed against a
# bare `ansible -m ping` of the same hosts; writes docs/fleet.md (make fleet). Root, Docker.
#
#   scripts/fleet.sh
#
# It runs itself (--in-bed) inside scripts/molecule.sh --exec, which provides everything else:
# the Docker daemon and images (scripts/testbed.sh), three loop filesystems (ext4, XFS with
# reflink=1, btrfs) mounted on the host, a frozen copy of the collection, and the teardown of
# containers, mounts and loop devices at exit (also after a failure, Ctrl-C or kill). Here:
#   1. FLEET_HOSTS folders spread over the three filesystems (round robin), each with a src of
#      300 small files and one 256 KiB file (on btrfs, src is a subvolume of its own);
#   2. FLEET_HOSTS containers, the first FLEET_SYSTEMD with systemd as PID 1, the others cron,
#      each with its folder bind-mounted at /data (molecule/shared/create.yml);
#   3. timed, with -f FLEET_FORKS and pipelining: ping (after an untimed warm-up ping), the role
#      converge (scripts/fleet/converge.yml), the re-converge (must change nothing), and
#      `fslinks-snapshot run data` on every host through ansible.builtin.command;
#   4. checks each host's snapshot on disk (method for its filesystem, content, `latest`),
#      then writes docs/fleet.md from the measurements (scripts/fleet/fleet.py render).
# docs/fleet.md is written only when every step and check passed. Logs and raw measurements:
# tests/output/fleet/ (FSLINKS_FLEET_OUTPUT).
#
# Environment: FLEET_HOSTS (default 30), FLEET_SYSTEMD (6), FLEET_FORKS (10),
# FSLINKS_FLEET_DOC (default docs/fleet.md), FSLINKS_FLEET_OUTPUT (default tests/output/fleet).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOSTS=${FLEET_HOSTS:-30}
SYSTEMD=${FLEET_SYSTEMD:-6}
FORKS=${FLEET_FORKS:-10}

say() { echo "fleet: $*"; }
die() { echo "fleet: $*" >&2; exit 1; }

if [[ ${1:-} != --in-bed ]]; then
    [[ $(id -u) -eq 0 ]] || die "needs root (loop devices, mount, docker)"
    [[ $HOSTS =~ ^[1-9][0-9]*$ && $SYSTEMD =~ ^[0-9]+$ && $FORKS =~ ^[1-9][0-9]*$ ]] \
        || die "FLEET_HOSTS and FLEET_FORKS must be positive integers, FLEET_SYSTEMD an integer"
    ((SYSTEMD <= HOSTS)) || die "FLEET_SYSTEMD ($SYSTEMD) exceeds FLEET_HOSTS ($HOSTS)"
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install time)"
    export FSLINKS_FLEET_OUTPUT=${FSLINKS_FLEET_OUTPUT:-$ROOT/tests/output/fleet}
    export FSLINKS_FLEET_DOC=${FSLINKS_FLEET_DOC:-$ROOT/docs/fleet.md}
    export FLEET_HOSTS=$HOSTS FLEET_SYSTEMD=$SYSTEMD FLEET_FORKS=$FORKS
    # What is measured: the commit, and whether the checkout had changes (the copy holds them).
    FSLINKS_FLEET_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
    export FSLINKS_FLEET_COMMIT
    rm -rf "$FSLINKS_FLEET_OUTPUT"
    mkdir -p "$FSLINKS_FLEET_OUTPUT"
    # molecule.sh runs the command in its frozen copy of the collection (cwd).
    exec "$ROOT/scripts/molecule.sh" --exec fleet scripts/fleet.sh --in-bed
fi

# ---------------------------------------------------------------- inside the bed (frozen copy)
: "${FSLINKS_MOLECULE_RUN:?run scripts/fleet.sh without arguments}"
RUN=$FSLINKS_MOLECULE_RUN
DISKS=$FSLINKS_MOLECULE_DISKS
OUT=$FSLINKS_FLEET_OUTPUT
DOC=$FSLINKS_FLEET_DOC
FLEET="python3 $ROOT/scripts/fleet/fleet.py"
WORK=$DISKS/fleet
mkdir -p "$WORK"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$SECONDS

# --- 1. data folders and 2. the hosts' descriptions -------------------------------------------
FILESYSTEMS=(ext4 xfs btrfs)
platforms=()
{
    echo '[fleet]'
    for ((i = 1; i <= HOSTS; i++)); do
        fs=${FILESYSTEMS[(i - 1) % 3]}
        init=cron
        ((i <= SYSTEMD)) && init=systemd
        name=$(printf '%s-%s-%02d' "$fs" "$init" "$i")
        dir=$DISKS/$fs/$name
        mkdir "$dir"
        if [[ $fs == btrfs ]]; then
            btrfs -q subvolume create "$dir/src" >/dev/null
        else
            mkdir "$dir/src"
        fi
        $FLEET populate "$dir/src" "$name"
        platforms+=("{\"name\": \"$name\", \"image\": \"fslinks-debian:$init\", \"fs\": \"$fs\", \"init\": \"$init\", \"data\": \"$name\"}")
        echo "$name ansible_host=$RUN-$name fs=$fs init=$init"
    done
    echo
    echo '[fleet:vars]'
    echo 'ansible_connection=community.docker.docker'
    echo 'ansible_python_interpreter=/usr/bin/python3'
} >"$WORK/inventory.ini"
list=$(IFS=,; echo "${platforms[*]}")
echo "[$list]" >"$WORK/hosts.json"
cat >"$WORK/create-vars.json" <<EOF
{"molecule_yml": {"platforms": [$list]}, "molecule_instance_config": "$WORK/instances.yml"}
EOF
cp "$WORK/inventory.ini" "$WORK/hosts.json" "$OUT/"
say "$HOSTS data folders ready ($((SECONDS - T0)) s): $(grep -c cron "$WORK/inventory.ini" || true) cron, $SYSTEMD systemd hosts"

cat >"$WORK/ansible.cfg" <<EOF
[defaults]
inventory = $WORK/inventory.ini
forks = $FORKS
interpreter_python = /usr/bin/python3
gathering = explicit
retry_files_enabled = False
nocolor = True

[connection]
pipelining = True
EOF
export ANSIBLE_CONFIG=$WORK/ansible.cfg
export ANSIBLE_NOCOLOR=1

measure() {  # NAME COMMAND...: timed; on failure show the log's tail and stop
    local name=$1
    shift
    if ! $FLEET measure --name "$name" --out "$OUT" -- "$@"; then
        tail -n 40 "$OUT/$name.log" >&2
        die "$name failed (log: $OUT/$name.log)"
    fi
}

MOLECULE_SCENARIO_NAME=fleet measure create \
    ansible-playbook -i localhost, "$ROOT/molecule/shared/create.yml" -e "@$WORK/create-vars.json"

# --- 3. the measurements ------------------------------------------------------------------------
ansible fleet -f "$FORKS" -o -m ansible.builtin.ping >"$OUT/warmup.log" 2>&1 \
    || { tail -n 40 "$OUT/warmup.log" >&2; die "warm-up ping failed"; }
measure ping ansible fleet -f "$FORKS" -o -m ansible.builtin.ping
measure converge ansible-playbook -f "$FORKS" "$ROOT/scripts/fleet/converge.yml"
$FLEET recap "$OUT/converge.log" "$WORK/hosts.json"
measure reconverge ansible-playbook -f "$FORKS" "$ROOT/scripts/fleet/converge.yml"
$FLEET recap "$OUT/reconverge.log" "$WORK/hosts.json" --no-changes
measure trigger ansible fleet -f "$FORKS" -o -m ansible.builtin.command -a '/usr/local/bin/fslinks-snapshot run data'

# --- 4. checks and the page ---------------------------------------------------------------------
$FLEET verify --hosts "$WORK/hosts.json" --disks "$DISKS" --trigger-log "$OUT/trigger.log" --out "$OUT"

collection_version() {  # NAMESPACE.NAME -> version of the collection Ansible uses
    ansible-galaxy collection list "$1" --format json 2>/dev/null \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print(next(iter(v[sys.argv[1]]["version"] for v in d.values() if sys.argv[1] in v)))' "$1" \
        || echo '?'
}
HOSTS=$HOSTS FORKS=$FORKS SYSTEMD=$SYSTEMD LOAD_BEFORE=$LOAD_BEFORE \
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg) \
ANSIBLE_CORE=$(python3 -c 'import ansible.release as r; print(r.__version__)') \
COMMUNITY_DOCKER=$(collection_version community.docker) \
DOCKER=$(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?') \
KERNEL="Linux $(uname -r)" CPUS=$(nproc) COMMIT=${FSLINKS_FLEET_COMMIT:-unknown} \
python3 - "$OUT/meta.json" <<'EOF'
import datetime, json, os, platform, sys
e = os.environ
hosts, systemd = int(e['HOSTS']), int(e['SYSTEMD'])
meta = {
    'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
    'hosts': hosts, 'forks': int(e['FORKS']), 'files_per_host': 300,
    'mix': {'cron hosts': hosts - systemd, 'systemd hosts': systemd},
    'load_before': e['LOAD_BEFORE'], 'load_after': e['LOAD_AFTER'], 'ansible_core': e['ANSIBLE_CORE'],
    'community_docker': e['COMMUNITY_DOCKER'], 'docker': e['DOCKER'], 'kernel': e['KERNEL'],
    'cpus': e['CPUS'], 'python': platform.python_version(), 'commit': e['COMMIT'],
}
with open(sys.argv[1], 'w') as handle:
    json.dump(meta, handle, indent=2)
EOF
$FLEET render --out "$OUT" --doc "$OUT/fleet.md"
mkdir -p "$(dirname "$DOC")"
cp "$OUT/fleet.md" "$DOC.tmp"
mv "$DOC.tmp" "$DOC"
say "done in $((SECONDS - T0)) s: $DOC"
