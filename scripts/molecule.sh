#!/usr/bin/env bash
# Run one Molecule scenario on containers whose data disk is a real filesystem:
#   scripts/molecule.sh SCENARIO [MOLECULE_COMMAND [ARGS...]]     (default command: test)
#   scripts/molecule.sh --exec NAME COMMAND [ARGS...]
#       the same bed, copy, environment and teardown around COMMAND (run in the copy, in a
#       session of its own) instead of Molecule; NAME only names the run (scripts/fleet.sh).
#
#   1. scripts/testbed.sh: docker.io, a Docker daemon, the images the scenario's platforms name
#      (fslinks-debian:{systemd,cron} for --exec);
#   2. three loop filesystems made and mounted on the host (ext4, XFS with reflink=1, btrfs with
#      user_subvol_rm_allowed), each with a `src` (a subvolume on btrfs, a directory elsewhere),
#      and DATA/src for each platform that sets `data: DATA` (a folder of its disk, not the whole)
#      and for each of its `disks`; molecule/shared/create.yml bind-mounts each into its container
#      (at /data, or the disk's target);
#   3. `molecule test -s SCENARIO` (or the command given) on a copy of the collection taken at
#      the start, so edits to the checkout during the run do not change what is tested;
#   4. always, also after a failure, Ctrl-C or kill: removes this run's containers and networks
#      (by label),
#      unmounts the filesystems, detaches the loop devices and deletes the images.
# Leftovers of runs that were killed with SIGKILL are cleaned at the start of the next run.
#
# Environment: FSLINKS_MOLECULE_BASE (default /var/tmp/fslinks-molecule) holds one folder per
# run; FSLINKS_DISK_SIZE (default 400M: XFS needs at least 300M; the images are sparse).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXEC=0
if [[ ${1:-} == --exec ]]; then
    EXEC=1
    shift
fi
SCENARIO=${1:?usage: scripts/molecule.sh SCENARIO [MOLECULE_COMMAND [ARGS...]] | --exec NAME COMMAND [ARGS...]}
shift
if ((EXEC)); then
    (($#)) || { echo "molecule.sh: --exec $SCENARIO needs a command" >&2; exit 2; }
else
    (($#)) || set -- test
fi
BASE=${FSLINKS_MOLECULE_BASE:-/var/tmp/fslinks-molecule}
SIZE=${FSLINKS_DISK_SIZE:-400M}
FILESYSTEMS=(ext4 xfs btrfs)
export PATH=$ROOT/.venv/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin
# Plain logs when not on a terminal (CI), unless colours were asked for explicitly.
if [[ ! -t 1 && -z ${PY_COLORS:-}${FORCE_COLOR:-}${ANSIBLE_FORCE_COLOR:-} ]]; then
    export NO_COLOR=1
fi

say() { echo "molecule.sh: $*"; }
die() { echo "molecule.sh: $*" >&2; exit 1; }

if ((EXEC)); then
    [[ $SCENARIO =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "--exec: bad run name '$SCENARIO'"
else
    [[ -f $ROOT/molecule/$SCENARIO/molecule.yml ]] || die "no scenario molecule/$SCENARIO"
fi
[[ $(id -u) -eq 0 ]] || die "needs root (loop devices, mount, docker)"
[[ -x $ROOT/.venv/bin/molecule ]] || die "no molecule in .venv: run scripts/setup.sh (make setup)"

# The scenario's platforms, one line each: IMAGE FS [DATA], and "- FS DATA" for each of its
# extra disks.
PLATFORMS=()
if ((!EXEC)); then
    mapfile -t PLATFORMS < <(python - "$ROOT/molecule/$SCENARIO/molecule.yml" <<'EOF'
import sys
import yaml
for p in yaml.safe_load(open(sys.argv[1]))['platforms']:
    print(p['image'], p['fs'], p.get('data', ''))
    for d in p.get('disks', ()):  # more folders of the disks (molecule/shared/create.yml)
        print('-', d['fs'], d['data'])
EOF
)
    ((${#PLATFORMS[@]})) || die "no platforms in molecule/$SCENARIO/molecule.yml"
fi
# Only the images this scenario runs: each suite costs a debootstrap on a fresh machine.
# shellcheck disable=SC2046  # one word per image
"$ROOT/scripts/testbed.sh" $(printf '%s\n' "${PLATFORMS[@]}" | awk 'NF && $1 != "-" {print $1}' | sort -u)

# --- teardown of one run folder (ours at exit, or a dead run's) ----------------------------
teardown() {  # RUNDIR
    local dir=$1 run ids fs dev img
    run=$(basename "$dir")
    ids=$(docker ps -aq --filter "label=fslinks.molecule.run=$run" 2>/dev/null || true)
    if [[ -n $ids ]]; then
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null 2>&1 || true
    fi
    ids=$(docker network ls -q --filter "label=fslinks.molecule.run=$run" 2>/dev/null || true)
    if [[ -n $ids ]]; then
        # shellcheck disable=SC2086
        docker network rm $ids >/dev/null 2>&1 || true
    fi
    for fs in "${FILESYSTEMS[@]}"; do
        if mountpoint -q "$dir/$fs" 2>/dev/null; then
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                umount "$dir/$fs" 2>/dev/null && break
                sleep 0.3
            done
            mountpoint -q "$dir/$fs" && umount -l "$dir/$fs"
        fi
        img=$dir/$fs.img
        if [[ -e $img ]]; then
            for dev in $(losetup -n -O NAME -j "$img" 2>/dev/null); do
                losetup -d "$dev" 2>/dev/null || true
            done
        fi
    done
    rm -rf "$dir"
}

# Leftovers of killed runs: only folders whose owner pid is dead.
if [[ -d $BASE ]]; then
    for dir in "$BASE"/*/; do
        dir=${dir%/}
        [[ -f $dir/pid ]] || continue
        pid=$(cat "$dir/pid" 2>/dev/null || echo)
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            continue
        fi
        say "cleaning up after a killed run: $dir"
        teardown "$dir"
    done
fi

RUN=fslinks-$SCENARIO-$$
RUNDIR=$BASE/$RUN
mkdir -p "$RUNDIR"
echo $$ >"$RUNDIR/pid"

MPID=
# shellcheck disable=SC2317  # run by the traps below
finish() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n $MPID ]] && kill -0 "$MPID" 2>/dev/null; then
        # Interrupted: stop molecule first (it ignores SIGINT as a background job); an --exec
        # command runs in a session of its own: stop its whole process group.
        local target=$MPID
        ((EXEC)) && target=-$MPID
        kill -TERM -- "$target" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$MPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "$target" 2>/dev/null || true
    fi
    say "tearing down $RUN"
    teardown "$RUNDIR"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- data disks ----------------------------------------------------------------------------
declare -A MKFS=(
    [ext4]='mkfs.ext4 -q -F'
    [xfs]='mkfs.xfs -q -f -m reflink=1'
    [btrfs]='mkfs.btrfs -q -f'
)
declare -A MOUNT_OPTS=([ext4]='' [xfs]='' [btrfs]='user_subvol_rm_allowed')
for fs in "${FILESYSTEMS[@]}"; do
    img=$RUNDIR/$fs.img
    mnt=$RUNDIR/$fs
    mkdir -p "$mnt"
    truncate -s "$SIZE" "$img"
    ${MKFS[$fs]} "$img" >/dev/null
    # An explicit device (never a fixed loop number): others may hold some.
    dev=$(losetup --find --show "$img")
    mount -t "$fs" ${MOUNT_OPTS[$fs]:+-o "${MOUNT_OPTS[$fs]}"} "$dev" "$mnt"
    if [[ $fs == btrfs ]]; then
        btrfs -q subvolume create "$mnt/src" >/dev/null
    else
        mkdir "$mnt/src"
    fi
done
for platform in "${PLATFORMS[@]}"; do
    read -r _image fs data <<<"$platform"
    [[ -n $data ]] || continue
    [[ $data =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "bad data folder '$data' in molecule/$SCENARIO/molecule.yml"
    [[ -d $RUNDIR/$fs/$data ]] && continue   # a platform and a disk of another may share one
    mkdir "$RUNDIR/$fs/$data"
    if [[ $fs == btrfs ]]; then
        btrfs -q subvolume create "$RUNDIR/$fs/$data/src" >/dev/null
    else
        mkdir "$RUNDIR/$fs/$data/src"
    fi
done
say "data disks of $RUN ready: $(for fs in "${FILESYSTEMS[@]}"; do printf '%s ' "$fs=$(findmnt -n -o SOURCE "$RUNDIR/$fs")"; done)"

# --- a frozen copy of the collection --------------------------------------------------------
# Molecule runs on a copy of what git would ship (tracked + untracked-not-ignored files), at
# .../ansible_collections/fslinks/snapshots: edits to the checkout during a run (the role ships
# plugins/module_utils to the hosts) cannot change the code between converge and idempotence.
TREE=$RUNDIR/collections/ansible_collections/fslinks/snapshots
cd "$ROOT"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
copy_shipped_tree "$TREE"
export ANSIBLE_COLLECTIONS_PATH=$RUNDIR/collections

# --- molecule ------------------------------------------------------------------------------
# create.yml reads these: container names and labels, and the bind-mount sources.
export FSLINKS_MOLECULE_RUN=$RUN
export FSLINKS_MOLECULE_DISKS=$RUNDIR
# Molecule's state and inventory for this run only: a run always starts from nothing (every run
# ends with a teardown), and concurrent runs of checkouts with the same folder name never share.
export MOLECULE_EPHEMERAL_DIRECTORY=$RUNDIR/molecule
cd "$TREE"
t0=$SECONDS
rc=0
# In the background and waited for, so that a signal to this script runs the teardown at once
# (bash runs traps only between foreground commands).
if ((EXEC)); then
    setsid -w "$@" &
else
    molecule "$@" -s "$SCENARIO" &
fi
MPID=$!
wait "$MPID" || rc=$?
MPID=
if ((EXEC)); then
    say "$*: exit $rc after $((SECONDS - t0)) s"
else
    say "molecule $1 -s $SCENARIO: exit $rc after $((SECONDS - t0)) s"
fi
exit "$rc"
