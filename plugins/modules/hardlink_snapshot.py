#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
---
module: hardlink_snapshot
short_description: Rotating point-in-time snapshots by btrfs subvolume, reflink or hard links
version_added: 0.1.0
description:
  - Makes one point-in-time snapshot of the directory O(src) under the snapshot root O(dest), named
    by its UTC time (C(2026-11-21T103000Z)), points C(DEST/latest) at it, then prunes old snapshots
    by the O(keep) policy.
  - Picks the best method the filesystems allow (O(method=auto)) - a read-only btrfs subvolume
    snapshot when O(src) is a subvolume on the same btrfs filesystem (constant time whatever the size);
    else reflinks of every file when O(src) and O(dest) share a filesystem that can clone (each
    snapshot has its own inodes, so a later C(chmod) or edit of the source never shows in it);
    else hard links to the previous snapshot for unchanged files, as C(rsync --link-dest) does,
    with copies of what changed.
  - The snapshot holds what C(rsync -aHAX --numeric-ids --sparse) would copy - regular files,
    directories, symlinks (never followed), hard links inside O(src), fifos, device nodes, extended
    attributes and ACLs, owners, modes and nanosecond modification times.
  - Safe by construction. The snapshot is built in C(NAME.partial), flushed to disk and published by
    rename; pruning happens only after that and never removes the newest snapshot; a C(.partial)
    left by a killed run is removed by the next run and never counted or linked against. One run
    per O(dest) at a time (a lock file in O(dest)). The tree is walked with directory file
    descriptors and C(O_NOFOLLOW), so replacing a directory by a symlink during the run cannot make
    it read or write outside O(src) and O(dest).
author:
  - fslinks.snapshots contributors (@fslinks)
options:
  src:
    description:
      - Absolute path of the directory to snapshot.
      - Or C([USER@]HOST:/PATH) (rsync's syntax) to pull the directory C(/PATH) of another host over
        ssh onto this one, the backup server. rsync C(-aHAX --numeric-ids --delete) does the transfer
        (C(--one-file-system) and O(exclude) as given). On btrfs the pull updates a mirror subvolume
        C(DEST/.fslinks-mirror) in place and the snapshot is a read-only snapshot of it; on a
        filesystem that can reflink the mirror is a directory updated in place (C(--inplace)) and the
        snapshot is a reflink tree of it, so a snapshot costs only the blocks that changed; elsewhere
        rsync writes C(NAME.partial) with C(--link-dest) to the previous snapshot. A failed or killed
        pull publishes nothing; files that vanished during the pull (rsync exit 24) are a warning.
      - rsync notices a changed file by its size and modification time (its quick check); a change
        that keeps both (same size, within the same second) is found by a later pull only when the
        file changes again. Host keys are always checked (O(ssh_known_hosts)).
    type: path
    required: true
  dest:
    description:
      - Absolute path of the snapshot root, which holds the snapshots, C(latest) and a lock file.
        Created with mode C(0700) when missing.
      - Must not be inside O(src) unless excluded by O(exclude), and O(src) must not be inside it.
    type: path
    required: true
  method:
    description:
      - V(auto) picks V(btrfs), V(reflink) or V(hardlink) as described above; it never fails for lack
        of reflink.
      - V(btrfs), V(reflink), V(hardlink) and V(copy) force a method; a method the filesystems
        cannot do fails with a message saying why, before anything is written.
      - V(copy) makes a full independent copy every time.
    type: str
    choices: [auto, btrfs, reflink, hardlink, copy]
    default: auto
  keep:
    description:
      - Retention. V(last) keeps the N snapshots made last; V(hourly), V(daily), V(weekly), V(monthly)
        and V(yearly) keep the newest snapshot of each of the last N such UTC periods that have one
        (by each snapshot's creation time), and the oldest snapshot too while fewer than N periods have
        one. A snapshot kept by any rule stays; the snapshot made last is always kept.
      - Empty (the default) keeps every snapshot. A policy whose counts are all 0 is refused.
      - The precise semantics, and how they compare with restic, borg, btrbk, snapper and rsnapshot,
        are in docs/retention.md of the collection.
      - V(min_free) is a free-space floor on the filesystem of O(dest), as a share of its size
        (V(20%)) or in bytes (V(10G), V(500M), V(1048576); binary units). Before and after the run
        the oldest snapshots are deleted, one at a time, until that much is free again; never the
        newest snapshot and never the one just made. A run that is left under the floor warns.
      - Also without V(min_free), a V(copy) or a first V(hardlink) snapshot whose data cannot fit
        in the free space fails before it writes anything; any run that runs out of space midway
        fails and removes what it had written, the earlier snapshots untouched.
    type: dict
    default: {}
    suboptions:
      last: {description: Number of snapshots made last to keep., type: int}
      hourly: {description: Number of hours to keep one snapshot of., type: int}
      daily: {description: Number of days to keep one snapshot of., type: int}
      weekly: {description: Number of ISO weeks to keep one snapshot of., type: int}
      monthly: {description: Number of months to keep one snapshot of., type: int}
      yearly: {description: Number of years to keep one snapshot of., type: int}
      min_free: {description: 'Free space to keep on the filesystem of O(dest): V(20%) of it, or bytes such as V(10G).', type: str}
  exclude:
    description:
      - rsync-style patterns of paths not to snapshot, relative to O(src). C(/tmp) is anchored at
        O(src), C(*.iso) matches a name anywhere, C(cache/) matches directories only, C(**)
        crosses directories.
      - Also with V(btrfs) - the snapshot is made writable, the excluded paths deleted, then it is
        set read-only.
    type: list
    elements: str
    default: []
  one_file_system:
    description:
      - Do not descend into other filesystems mounted below O(src) (their mount point directories
        are kept, empty), like C(rsync -x).
    type: bool
    default: true
  state:
    description:
      - V(present) makes a snapshot, then prunes. V(pruned) only prunes (and cleans leftovers).
    type: str
    choices: [present, pruned]
    default: present
  lock_timeout:
    description:
      - Seconds to wait for another run on the same O(dest) to finish. V(0) fails at once with
        "another snapshot of DEST is running".
    type: int
    default: 0
  workers:
    description:
      - Processes that build the snapshot together (methods V(reflink), V(hardlink) and V(copy);
        most of the work is in the kernel, which runs them on separate CPUs). Each takes
        directories from the others while it is idle; the result is the same as with one.
      - V(0) picks one per CPU this process may use, at most 4 (at most 2 when O(dest) is on
        btrfs, which serializes metadata updates within a subvolume). V(1) walks in one process.
      - Check mode and diff mode always walk in one process.
    type: int
    default: 0
  on_error:
    description:
      - What an entry of O(src) that cannot be read or written does (permission denied, an I/O error
        reading a file).
      - V(skip) leaves it out, as C(rsync) and C(restic) do - the snapshot is published, the record
        C(DEST/NAME.json) lists the skipped paths with the reason (the first 100; C(stats.skipped)
        counts them all), the task warns and returns them in RV(skipped_entries).
      - V(fail) fails the run on the first such entry and publishes nothing.
      - Whatever the choice, these always fail the run - an error on O(src) itself (the root of the
        snapshot), no space or quota left on O(dest) (C(ENOSPC), C(EDQUOT)), a read-only O(dest)
        (C(EROFS)), and an entry replaced while it was read. An entry deleted while the run walks
        is left out silently and counted in C(stats.changed_during_run).
    type: str
    choices: [skip, fail]
    default: skip
  ssh_key:
    description:
      - A remote O(src) only. Private key file ssh logs in with (C(ssh -i), with
        C(IdentitiesOnly=yes)); none uses ssh's own defaults. The role
        P(fslinks.snapshots.snapshot_jobs#role) makes one per backup server.
    type: path
  ssh_port:
    description:
      - A remote O(src) only. The ssh port of its host; none uses 22 or what C(ssh_config) says.
    type: int
  ssh_known_hosts:
    description:
      - A remote O(src) only. known_hosts file that holds the host key of its host (C([HOST]:PORT)
        when the port is not 22); none uses ssh's default files. The host key is always checked
        (C(StrictHostKeyChecking=yes)) - an unknown or changed key fails the run.
    type: path
  bwlimit:
    description:
      - A remote O(src) only. KiB per second the pull may read (C(rsync --bwlimit)); V(0) is no limit.
    type: int
    default: 0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Returns the plan - method, what would be linked, cloned and copied, what would be pruned.
  diff_mode:
    support: full
    details: The list of snapshots before and after.
  platform:
    platforms: posix
    support: full
    details: Linux only.
notes:
  - Every run with O(state=present) makes a new snapshot and so reports changed.
  - Next to each snapshot C(DEST/NAME) the run writes its record C(DEST/NAME.json) (method, reason,
    stats, duration), as Timeshift and snapper keep an info file; it is removed with the snapshot.
  - Like C(rsync --link-dest), the hardlink method links each unchanged file to the previous snapshot
    on its own; two src files that were one inode in the previous snapshot and were since split
    into two equal files become one inode again in the new snapshot.
  - btrfs snapshots do not contain nested subvolumes (they show as empty directories).
seealso:
  - module: fslinks.snapshots.reflink_copy
  - module: fslinks.snapshots.link_facts
"""

EXAMPLES = r"""
- name: Snapshot /srv/data, keeping 24 hourly, 7 daily and 4 weekly
  fslinks.snapshots.hardlink_snapshot:
    src: /srv/data
    dest: /srv/.snapshots/data
    keep: {hourly: 24, daily: 7, weekly: 4}
    exclude: ['*.tmp', /cache/]

- name: Hard-link snapshots on ext4, keeping the last 10
  fslinks.snapshots.hardlink_snapshot:
    src: /home
    dest: /backup/home
    method: hardlink
    keep: {last: 10}

- name: On the backup server, pull web1's /srv/data over ssh (a read-only key; see the role)
  fslinks.snapshots.hardlink_snapshot:
    src: root@web1.example.org:/srv/data
    dest: /backup/web1/data
    ssh_key: /etc/fslinks-snapshots/ssh/id_ed25519
    ssh_known_hosts: /etc/fslinks-snapshots/ssh/known_hosts
    bwlimit: 20000
    keep: {daily: 14, weekly: 8}

- name: Only prune
  fslinks.snapshots.hardlink_snapshot:
    src: /srv/data
    dest: /srv/.snapshots/data
    state: pruned
    keep: {daily: 7}
"""

RETURN = r"""
rsync:
  description:
    - A pull (remote O(src)) only - what rsync counted (C(--stats)) and did (its itemized lines), also
      in the snapshot's record.
  returned: state is present and src is remote
  type: dict
  sample: {exit: 0, entries: 20412, reg: 20001, dir: 410, files_transferred: 201, total_bytes: 1178599424,
           transferred_bytes: 1075890176, literal_bytes: 11239424, matched_bytes: 1064650752,
           received_bytes: 11423311, sent_bytes: 250108, added: 0, modified: 201, deleted: 0}
snapshot:
  description: Path of the new snapshot (in check mode, of the one that would be made).
  returned: state is present
  type: str
  sample: /srv/.snapshots/data/2026-11-21T103000Z
method:
  description: Method used (V(btrfs), V(reflink), V(hardlink) or V(copy)).
  returned: state is present
  type: str
  sample: reflink
reason:
  description: Why this method was chosen.
  returned: state is present
  type: str
  sample: src and dest are on one filesystem that can reflink
stats:
  description: What the run did (in check mode, would do). Zero counts for V(btrfs), which copies nothing.
  returned: always
  type: dict
  contains:
    files: {description: Regular files., type: int, returned: always}
    dirs: {description: Directories below O(src)., type: int, returned: always}
    linked: {description: Files hard-linked to the previous snapshot., type: int, returned: always}
    reflinked: {description: Files cloned from O(src)., type: int, returned: always}
    copied: {description: Files copied., type: int, returned: always}
    bytes_copied: {description: Bytes copied., type: int, returned: always}
    bytes_cloned: {description: Bytes cloned (shared with O(src))., type: int, returned: always}
    symlinks: {description: Symlinks., type: int, returned: always}
    specials: {description: 'Fifos, sockets and device nodes.', type: int, returned: always}
    hardlinks: {description: Hard links inside O(src) kept as links., type: int, returned: always}
    changed_during_run: {description: Files that changed or vanished while being copied., type: int, returned: always}
    xattr_files: {description: Files with extended attributes (ACLs included)., type: int, returned: always}
    added: {description: Files with no namesake in the previous snapshot., type: int, returned: always}
    modified: {description: Files whose namesake in the previous snapshot differs (data or metadata)., type: int, returned: always}
    skipped: {description: Entries left out because they could not be read or written (O(on_error=skip))., type: int, returned: always}
    not_linked:
      description:
        - Files unchanged since the previous snapshot that it refused to hard-link (an immutable or
          append-only file there, C(fs.protected_hardlinks), its link limit); each got new data
          instead (a copy or a clone), and a warning says how many.
      type: int
      returned: always
  sample: {files: 1200, dirs: 80, linked: 1190, reflinked: 0, copied: 10, bytes_copied: 40960,
           bytes_cloned: 0, symlinks: 3, specials: 0, hardlinks: 0, changed_during_run: 0}
changed_files:
  description:
    - Regular files of the new snapshot against the previous one, counted on the way at the cost of
      one C(lstat) per file. C(added), C(modified) (data or metadata differ) and C(deleted) (from
      the previous snapshot's record; V(null) where it does not know).
    - V(null) for a first snapshot and for V(btrfs), which walks nothing. A sudden large number is
      what a mass change (a ransomware-style rewrite) looks like; the metric
      C(fslinks_snapshot_changed_files) carries it.
  returned: state is present
  type: dict
  sample: {added: 12, modified: 3, deleted: 0}
pruned:
  description: Snapshots deleted (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [/srv/.snapshots/data/2026-11-20T103000Z]
kept:
  description: Snapshots kept, oldest first.
  returned: always
  type: list
  elements: str
  sample: [/srv/.snapshots/data/2026-11-21T093000Z, /srv/.snapshots/data/2026-11-21T103000Z]
future_dated:
  description:
    - Kept snapshots whose creation time is after the clock of this run (made with the clock ahead,
      or the clock went back since), oldest first; each also gives a warning. See docs/retention.md.
  returned: always
  type: list
  elements: str
  sample: [/srv/.snapshots/data/2030-01-01T000000Z]
leftovers_removed:
  description: Partial or half-deleted snapshots of killed runs that were removed.
  returned: always
  type: list
  elements: str
  sample: [/srv/.snapshots/data/2026-11-21T093000Z.partial]
skipped_entries:
  description:
    - Entries left out of the snapshot (O(on_error=skip)), the first 100, each with its path relative
      to O(src) and the error; C(stats.skipped) counts them all. The record C(DEST/NAME.json) lists
      the same as C(skipped) (a result key of that name is Ansible's own).
  returned: state is present
  type: list
  elements: dict
  contains:
    path: {description: The path relative to O(src)., type: str, returned: always}
    error: {description: What failed., type: str, returned: always}
  sample: [{path: home/alice/.ssh/id_ed25519, error: 'open: home/alice/.ssh/id_ed25519: permission denied'}]
space:
  description: The filesystem of O(dest) after the run (in check mode, as it is).
  returned: when O(dest) exists
  type: dict
  contains:
    free_bytes: {description: Free bytes (as C(df) counts them; blocks reserved for root are not free)., type: int, returned: always}
    size_bytes: {description: Size of the filesystem in bytes., type: int, returned: always}
    min_free_bytes: {description: The floor O(keep.min_free) in bytes; null without one., type: int, returned: always}
  sample: {free_bytes: 53687091200, size_bytes: 107374182400, min_free_bytes: 21474836480}
seconds:
  description: Duration of the run.
  returned: always
  type: float
  sample: 1.25
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import failure
from ansible_collections.fslinks.snapshots.plugins.module_utils._options import argument_spec
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import (
    Request, list_snapshots_at, run,
)


def main():
    spec = argument_spec()      # the request's options, defined once in module_utils/_options.py
    spec['state'] = dict(type='str', default='present', choices=['present', 'pruned'])
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    keep = dict((k, v) for k, v in (p['keep'] or {}).items() if v is not None)
    try:
        req = Request(p['src'], p['dest'], method=p['method'], keep=keep, exclude=p['exclude'],
                      one_file_system=p['one_file_system'], lock_timeout=p['lock_timeout'],
                      workers=p['workers'], on_error=p['on_error'], ssh_key=p['ssh_key'], ssh_port=p['ssh_port'],
                      ssh_known_hosts=p['ssh_known_hosts'], bwlimit=p['bwlimit'])
        before = list_snapshots_at(req.dest) if module._diff else None
        result = run(req, state=p['state'], dry_run=module.check_mode)
    except Exception as exc:    # the door: every failure is a message naming its path
        module.fail_json(**failure(exc, p['dest'], 'hardlink_snapshot'))
    if before is not None:
        after = [os.path.basename(k) for k in result['kept']]
        result['diff'] = {'before_header': p['dest'], 'after_header': p['dest'],
                          'before': ''.join(n + '\n' for n in before),
                          'after': ''.join(n + '\n' for n in after)}
    for warning in result.pop('warnings', []):
        module.warn(warning)        # Ansible returns them as the result's warnings
    # A result's own "skipped" is Ansible's (a true one marks the task skipped): another name.
    result['skipped_entries'] = result.pop('skipped', [])
    if p['state'] == 'pruned':
        for key in ('snapshot', 'method', 'reason', 'skipped_entries'):
            result.pop(key, None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
