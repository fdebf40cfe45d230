#!/usr/bin/env bash
# Container test bed for the Molecule scenarios (molecule/), offline and idempotent:
#   1. docker.io, debootstrap and prometheus-node-exporter from Debian's packages (only what is missing),
#   2. a Docker daemon (an already running one is left alone),
#   3. the base images, built from Debian packages with debootstrap + `docker import` (no
#      registry): fslinks-debian:systemd boots systemd as PID 1, fslinks-debian:cron runs cron.
#      An image is rebuilt only when its tag is missing or its recipe changed (label).
#
#   scripts/testbed.sh            all of the above (a second run takes well under a second)
#   scripts/testbed.sh --rebuild  build the images again even if they exist
#
# Environment: FSLINKS_DEBIAN_SUITE (default bookworm), FSLINKS_DEBIAN_MIRROR (default: the
# mirror apt uses here), DOCKERD_LOG (default /var/log/fslinks-dockerd.log).
set -euo pipefail

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
SUITE=${FSLINKS_DEBIAN_SUITE:-bookworm}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/fslinks-dockerd.log}
LOCK=${FSLINKS_TESTBED_LOCK:-/var/tmp/fslinks-testbed.lock}
REBUILD=0
[[ ${1:-} == --rebuild ]] && REBUILD=1

say() { echo "testbed: $*"; }
die() { echo "testbed: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (apt-get, dockerd, debootstrap)"

# One testbed.sh at a time (two `make molecule` runs must not both start dockerd or build).
exec 9>"$LOCK"
flock 9

# --- 1. packages ---------------------------------------------------------------------------
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# prometheus-node-exporter: molecule/default copies its binary into a container and scrapes it.
ensure_packages testbed docker.io debootstrap debian-archive-keyring iptables xfsprogs btrfs-progs e2fsprogs util-linux \
    prometheus-node-exporter

# --- 2. Docker daemon ----------------------------------------------------------------------
docker_ok() { docker info >/dev/null 2>&1; }
if ! docker_ok; then
    if pgrep -x dockerd >/dev/null; then
        say "a dockerd runs but does not answer yet; waiting for it"
    else
        # No systemd on this kind of host: run the daemon in its own session, so it outlives
        # this script and the make that called it. Default bridge (docker0): never --bridge=none.
        say "starting dockerd (log: $DOCKERD_LOG)"
        setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &   # 9>&-: not our lock
    fi
    for _ in $(seq 1 300); do
        [[ -S /var/run/docker.sock ]] && docker_ok && break
        sleep 0.1
    done
    docker_ok || die "dockerd did not come up in 30 s; see $DOCKERD_LOG"
fi

# --- 3. base images ------------------------------------------------------------------------
mirror() {
    if [[ -n ${FSLINKS_DEBIAN_MIRROR:-} ]]; then echo "$FSLINKS_DEBIAN_MIRROR"; return; fi
    local uri=
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        # deb822: the first URIs: line that is not the security archive.
        uri=$(awk 'tolower($1)=="uris:" && $2 !~ /security/ {print $2; exit}' \
            /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z $uri && -r /etc/apt/sources.list ]]; then
        uri=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
            /etc/apt/sources.list)
    fi
    [[ -n $uri ]] || die "no Debian mirror in /etc/apt/sources.list.d/debian.sources or sources.list; set FSLINKS_DEBIAN_MIRROR"
    echo "$uri"
}

# Packages in every image: the role runs Python 3 and the engine; the tests use rsync to compare
# trees, filefrag (e2fsprogs) to see shared extents, btrfs-progs and acl/attr to inspect.
COMMON=python3,rsync,e2fsprogs,btrfs-progs,acl,attr,procps,findutils
declare -A IMAGE_PKGS=(
    [systemd]="$COMMON,systemd,systemd-sysv,dbus"
    [cron]="$COMMON,cron"
)
# Units that cannot work (or make no sense) in a container; masked so that
# `systemctl is-system-running --wait` reports "running", not "degraded".
MASK_UNITS=(
    systemd-remount-fs.service systemd-udevd.service systemd-udev-trigger.service
    systemd-firstboot.service systemd-modules-load.service sys-kernel-config.mount
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount
    getty.target console-getty.service getty@tty1.service serial-getty@.service
    systemd-logind.service e2scrub_reap.service e2scrub_all.timer apt-daily.timer
    apt-daily-upgrade.timer fstrim.timer
)
RECIPE_VERSION=1   # bump when the build below changes in a way the hash cannot see

recipe_hash() {  # KIND -> hash of everything that defines the image
    printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$1" "${IMAGE_PKGS[$1]}" "${MASK_UNITS[*]}" \
        | sha256sum | cut -c1-16
}

build_image() {  # KIND
    local kind=$1 tag=fslinks-debian:$1 want have rootfs mirror_uri
    want=$(recipe_hash "$kind")
    have=$(docker image inspect -f '{{ index .Config.Labels "fslinks.testbed.recipe" }}' "$tag" 2>/dev/null || true)
    if ((!REBUILD)) && [[ $have == "$want" ]]; then
        return 0
    fi
    mirror_uri=$(mirror)
    rootfs=$(mktemp -d /var/tmp/fslinks-rootfs-"$kind".XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    say "building $tag: debootstrap $SUITE from $mirror_uri (about a minute)"
    local t0=$SECONDS
    if ! debootstrap --variant=minbase --include="${IMAGE_PKGS[$kind]}" \
        "$SUITE" "$rootfs" "$mirror_uri" >"$rootfs.log" 2>&1; then
        tail -n 30 "$rootfs.log" >&2
        die "debootstrap failed for $tag (full log: $rootfs.log)"
    fi
    rm -f "$rootfs.log"
    # Small and reproducible: no package caches or lists (the containers are offline), no
    # machine id (systemd makes a fresh one per container), no leftover resolv.conf/hostname.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"
    local changes=(
        --change 'ENV container=docker'
        --change "LABEL fslinks.testbed.recipe=$want"
        --change 'WORKDIR /'
    )
    if [[ $kind == systemd ]]; then
        for u in "${MASK_UNITS[@]}"; do
            ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
        done
        # (docker 20.10 refuses STOPSIGNAL here: the containers get --stop-signal SIGRTMIN+3.)
        changes+=(--change 'CMD ["/sbin/init"]')
    else
        changes+=(--change 'CMD ["/usr/sbin/cron", "-f"]')
    fi
    tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    say "built $tag in $((SECONDS - t0)) s"
}

for kind in systemd cron; do
    build_image "$kind"
done
