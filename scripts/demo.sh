#!/usr/bin/env bash
# make demo: loopback XFS (reflink=1) and ext4 images, a 1 GiB file and a small tree on
# each, then demo/demo.yml. Everything is unmounted and detached on exit, also on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.collections" ANSIBLE_LOCALHOST_WARNING=False \
    ANSIBLE_INVENTORY_UNPARSED_WARNING=False ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-}
PATH="$ROOT/.venv/bin:$PATH"

[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (it mounts loopback filesystems)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/fslinks-demo.XXXXXX)
cleanup() {
    for fs in xfs ext4; do
        if mountpoint -q "$work/$fs"; then umount "$work/$fs" || true; fi   # -o loop: umount detaches too
    done
    rm -rf "$work"
}
trap cleanup EXIT

for fs in xfs ext4; do
    truncate -s 1400M "$work/$fs.img"
    mkdir "$work/$fs"
done
mkfs.xfs -q -f -m reflink=1 "$work/xfs.img"
mkfs.ext4 -q -F "$work/ext4.img"
for fs in xfs ext4; do
    mount -o loop "$work/$fs.img" "$work/$fs"
    head -c 512M /dev/urandom >"$work/$fs/disk.img"
    mkdir -p "$work/$fs/tree/etc" "$work/$fs/tree/logs"
    cp -a /etc/os-release /etc/hostname "$work/$fs/tree/etc/" 2>/dev/null || true
    for i in $(seq 1 200); do echo "line $i" >"$work/$fs/tree/logs/app-$i.log"; done
    ln -sf ../etc/os-release "$work/$fs/tree/logs/os"
done
sync

ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=$ROOT/.venv/bin/python" \
    -e "xfs_dir=$work/xfs" -e "ext4_dir=$work/ext4" demo/demo.yml
