#!/usr/bin/env bash
# Container test bed for the Molecule scenarios (molecule/), offline and idempotent:
#   1. docker.io, debootstrap and prometheus-node-exporter from Debian's packages (only what is missing),
#   2. a Docker daemon (an already running one is left alone),
#   3. the base images, built from Debian packages with debootstrap + `docker import` (no
#      registry), one per Debian suite and kind, tagged fslinks-debian:SUITE-KIND: KIND systemd
#      boots systemd as PID 1, cron runs cron, sshd is systemd with OpenSSH's server enabled
#      (host keys made at each container's first boot, never shared by an image's containers).
#      The default suite's are also fslinks-debian:KIND.
#      An image is rebuilt only when its tag is missing or its recipe changed (label); missing
#      ones are built two at a time.
#
#   scripts/testbed.sh                       all of the above for fslinks-debian:systemd and :cron
#   scripts/testbed.sh IMAGE...              for these images instead: KIND or SUITE-KIND, with or
#                                            without fslinks-debian: (e.g. bullseye-cron)
#   scripts/testbed.sh --rebuild [IMAGE...]  build the images again even if they exist
#
# Environment: FSLINKS_DEBIAN_SUITE (default bookworm: the suite of fslinks-debian:KIND),
# FSLINKS_DEBIAN_MIRROR (default: the mirror apt uses here), DOCKERD_LOG (default
# /var/log/fslinks-dockerd.log).
set -euo pipefail

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
DEFAULT_SUITE=${FSLINKS_DEBIAN_SUITE:-bookworm}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/fslinks-dockerd.log}
LOCK=${FSLINKS_TESTBED_LOCK:-/var/tmp/fslinks-testbed.lock}
REBUILD=0
if [[ ${1:-} == --rebuild ]]; then
    REBUILD=1
    shift
fi
(($#)) || set -- systemd cron

say() { echo "testbed: $*"; }
die() { echo "testbed: $*" >&2; exit 1; }

# The images asked for, as SUITE-KIND (once each).
declare -A WANT=()
for image in "$@"; do
    image=${image#fslinks-debian:}
    [[ $image == *-* ]] || image=$DEFAULT_SUITE-$image
    [[ $image =~ ^[a-z]+-(systemd|cron|sshd)$ ]] || die "no such image: $image (KIND or SUITE-KIND, KIND systemd, cron or sshd)"
    WANT[$image]=1
done

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
    # molecule/pull: a backup server and its clients (ssh, sshd and rrsync, shipped with rsync;
    # iproute2 for the network facts that give the server's address).
    [sshd]="$COMMON,systemd,systemd-sysv,dbus,openssh-server,iproute2"
)
# What the sshd kind changes after debootstrap (in the recipe hash: a change rebuilds only it).
# openssh-server's postinst made host keys: removed, so that each container makes its own at boot
# (ssh-keygen -A before sshd's own config test). pam_loginuid cannot write the loginuid in a
# container (no CAP_AUDIT_CONTROL): optional, or every login is closed at once.
SSHD_RECIPE='rm -f /etc/ssh/ssh_host_*; ssh.service.d/hostkeys.conf: ExecStartPre=ssh-keygen -A; pam_loginuid optional'
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

recipe_hash() {  # SUITE KIND -> hash of everything that defines the image
    # (The sshd steps only for sshd: the other images keep their hash, so nothing rebuilds them.)
    { printf '%s\n' "$RECIPE_VERSION" "$1" "$2" "${IMAGE_PKGS[$2]}" "${MASK_UNITS[*]}"
      if [[ $2 == sshd ]]; then printf '%s\n' "$SSHD_RECIPE"; fi; } \
        | sha256sum | cut -c1-16
}

label() {  # TAG -> its recipe label, empty if there is no such image
    docker image inspect -f '{{ index .Config.Labels "fslinks.testbed.recipe" }}' "$1" 2>/dev/null || true
}

current() {  # SUITE KIND -> 0 if the image is there with its recipe (under either tag), tagging
    # it under the other: images built before the per-suite tags need no rebuild.
    local suite=$1 kind=$2 want tags=("fslinks-debian:$1-$2") tag
    want=$(recipe_hash "$suite" "$kind")
    [[ $suite == "$DEFAULT_SUITE" ]] && tags+=("fslinks-debian:$kind")
    for tag in "${tags[@]}"; do
        if [[ $(label "$tag") == "$want" ]]; then
            for other in "${tags[@]}"; do
                [[ $(label "$other") == "$want" ]] || docker tag "$tag" "$other"
            done
            return 0
        fi
    done
    return 1
}

build_image() {  # SUITE KIND
    local suite=$1 kind=$2 tag=fslinks-debian:$1-$2 want rootfs mirror_uri
    want=$(recipe_hash "$suite" "$kind")
    mirror_uri=$(mirror)
    rootfs=$(mktemp -d /var/tmp/fslinks-rootfs-"$suite-$kind".XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    say "building $tag: debootstrap $suite from $mirror_uri (about a minute)"
    local t0=$SECONDS
    if ! debootstrap --variant=minbase --include="${IMAGE_PKGS[$kind]}" \
        "$suite" "$rootfs" "$mirror_uri" >"$rootfs.log" 2>&1; then
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
    if [[ $kind == sshd ]]; then
        rm -f "$rootfs"/etc/ssh/ssh_host_*
        mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
        printf '%s\n' '[Service]' 'ExecStartPre=' 'ExecStartPre=/usr/bin/ssh-keygen -A' \
            'ExecStartPre=/usr/sbin/sshd -t' >"$rootfs/etc/systemd/system/ssh.service.d/hostkeys.conf"
        sed -i -E 's/^(session\s+)required(\s+pam_loginuid\.so)/\1optional\2/' "$rootfs/etc/pam.d/sshd"
        grep -Eq '^session\s+optional\s+pam_loginuid\.so' "$rootfs/etc/pam.d/sshd" \
            || die "$tag: no pam_loginuid line to make optional in /etc/pam.d/sshd"
        [[ -e $rootfs/etc/systemd/system/multi-user.target.wants/ssh.service ]] \
            || die "$tag: openssh-server did not enable ssh.service"
    fi
    if [[ $kind == systemd || $kind == sshd ]]; then
        for u in "${MASK_UNITS[@]}"; do
            ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
        done
        # (docker 20.10 refuses STOPSIGNAL here: the containers get --stop-signal SIGRTMIN+3.)
        changes+=(--change 'CMD ["/sbin/init"]')
    else
        changes+=(--change 'CMD ["/usr/sbin/cron", "-f"]')
    fi
    tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
    [[ $suite == "$DEFAULT_SUITE" ]] && docker tag "$tag" "fslinks-debian:$kind"
    rm -rf "$rootfs"
    trap - EXIT
    say "built $tag in $((SECONDS - t0)) s"
}

# Two builds at a time: on a cold machine, mostly a download and dpkg unpacking each (2 cores).
pids=()
failed=0
for image in $(printf '%s\n' "${!WANT[@]}" | sort); do
    suite=${image%-*} kind=${image##*-}
    if ((!REBUILD)) && current "$suite" "$kind"; then
        continue
    fi
    if ((${#pids[@]} >= 2)); then
        wait -n -p finished "${pids[@]}" || failed=1
        left=()
        for pid in "${pids[@]}"; do
            [[ $pid == "$finished" ]] || left+=("$pid")
        done
        pids=("${left[@]}")
    fi
    build_image "$suite" "$kind" &
    pids+=("$!")
done
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
((!failed)) || die "an image build failed (see above)"
