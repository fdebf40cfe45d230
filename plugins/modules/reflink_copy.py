#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
---
module: reflink_copy
short_description: Copy a file or a tree sharing its data (reflink), like C(cp -a --reflink)
version_added: 0.1.0
description:
  - Copies O(src) to O(dest) with the kernel's clone ioctl (C(FICLONE)) so that the copy shares
    every data block with the original until one of them is written. Such a copy costs nothing
    and, unlike a hard link, is a separate file whose edits never show in the other.
  - Works on filesystems that can reflink (XFS with C(reflink=1), btrfs, bcachefs, OCFS2, ZFS 2.2+
    with block cloning, NFS 4.2). With O(reflink=auto) it falls back to a sparse-aware copy where
    the filesystem cannot clone or O(src) and O(dest) are on different filesystems.
  - Idempotent without reading the data. A dest file is up to date when it has the size and
    modification time of src (as C(rsync) decides), or when all its extents are the very extents
    of src (C(FIEMAP)); only metadata that differs is then fixed in place.
  - Every new file is written under a temporary name in dest's directory, given its metadata and
    renamed over dest, so a failure leaves dest as it was and no temporary file behind. A new tree
    is built under a temporary name and renamed into place when complete.
  - A single file is flushed to disk (C(fsync)) before its rename and a new tree (C(syncfs))
    before its own, so a crash leaves the old O(dest) or the complete new one. Files copied into
    an existing tree keep their temporary names until a C(syncfs) has put their data on disk
    (up to 8192 files or 256 MiB at a time), then get their names; clones need no flush. When the
    module returns, every change is on disk.
  - In a tree, symlinks are copied as symlinks and never followed, hard links inside O(src) stay
    hard links, sparse files stay sparse, fifos and device nodes are recreated, and directories get
    their modification times after their contents. Files in O(dest) that are not in O(src) are left
    alone.
  - Symlinks in the O(src) and O(dest) paths themselves are followed, except the last component of
    O(dest).
author:
  - fslinks.snapshots contributors (@fslinks)
options:
  src:
    description:
      - Absolute path of the file or directory to copy.
    type: path
    required: true
  dest:
    description:
      - Absolute path of the copy itself (never a directory to copy into, unlike C(cp)).
      - Its parent directory must exist.
      - When O(src) is a directory, O(dest) must be a directory or not exist, and must not be
        inside O(src).
    type: path
    required: true
  reflink:
    description:
      - V(auto) clones where the filesystem can and copies where it cannot (the default of GNU cp).
      - V(always) fails, before anything is created, where cloning is impossible.
      - V(never) always makes a full, independent copy of the data.
    type: str
    choices: [auto, always, never]
    default: auto
  preserve:
    description:
      - Attributes copied from O(src). POSIX ACLs are extended attributes and come with V(xattrs).
    type: list
    elements: str
    choices: [mode, ownership, timestamps, xattrs]
    default: [mode, ownership, timestamps, xattrs]
  force:
    description:
      - When V(false), an existing O(dest) is left alone, whatever it holds.
    type: bool
    default: true
  backup:
    description:
      - Before changing an existing O(dest), keep it as C(DEST.<UTC stamp>~) (for example
        C(/srv/app.conf.2026-11-21T103000Z~)), made as a reflink where the filesystem can, so it
        costs almost nothing.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the type, size, mode, owner and method of each entry that changes, never file contents.
  platform:
    platforms: posix
    support: full
    details: Linux only (uses Linux ioctls).
notes:
  - Cloning needs O(src) and O(dest) on the same filesystem; bind mounts and btrfs subvolumes of one
    filesystem count as the same.
  - Use M(fslinks.snapshots.link_facts) to learn whether a path can reflink and whether two files
    share their extents.
seealso:
  - module: fslinks.snapshots.link_facts
  - module: fslinks.snapshots.hardlink_snapshot
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Clone a VM image in no time (XFS or btrfs)
  fslinks.snapshots.reflink_copy:
    src: /var/lib/libvirt/images/base.qcow2
    dest: /var/lib/libvirt/images/web01.qcow2

- name: Copy a whole tree, sharing data where possible, keeping a backup of what changes
  fslinks.snapshots.reflink_copy:
    src: /srv/www
    dest: /srv/www-staging
    backup: true

- name: Insist on a reflink (fails on ext4 or across filesystems, leaving nothing behind)
  fslinks.snapshots.reflink_copy:
    src: /data/dataset.parquet
    dest: /data/experiments/dataset.parquet
    reflink: always

- name: An independent full copy, without ownership (for example to hand it to another user)
  fslinks.snapshots.reflink_copy:
    src: /srv/template
    dest: /home/alice/template
    reflink: never
    preserve: [mode, timestamps]
"""

RETURN = r"""
method:
  description:
    - How data was moved. V(reflink) when every file written was cloned, V(copy) when any data had
      to be copied, V(none) when no data was written (up to date, or only metadata fixed).
  returned: always
  type: str
  sample: reflink
files:
  description: Number of regular files in O(src).
  returned: always
  type: int
  sample: 1
bytes_cloned:
  description: Bytes of files written by cloning (shared, not copied).
  returned: always
  type: int
  sample: 2147483648
bytes_copied:
  description: Bytes of data really copied (holes of sparse files not counted).
  returned: always
  type: int
  sample: 0
backup_file:
  description: Path of the backup of the old O(dest).
  returned: changed and O(backup=true) and O(dest) existed
  type: str
  sample: /srv/www-staging.2026-11-21T103000Z~
stats:
  description: Counters of the walk.
  returned: always
  type: dict
  contains:
    files: {description: Regular files seen., type: int, returned: always}
    dirs: {description: Directories below O(src)., type: int, returned: always}
    symlinks: {description: Symlinks seen., type: int, returned: always}
    specials: {description: 'Fifos, sockets and device nodes seen.', type: int, returned: always}
    reflinked: {description: Files written by cloning., type: int, returned: always}
    copied: {description: Files written by copying., type: int, returned: always}
    hardlinks: {description: Names that are hard links to a file seen before in O(src)., type: int, returned: always}
    unchanged: {description: Entries already up to date., type: int, returned: always}
    metadata: {description: Entries whose metadata only was fixed., type: int, returned: always}
    changed_during_run: {description: Files that changed or vanished while being copied., type: int, returned: always}
  sample: {files: 1, dirs: 0, symlinks: 0, specials: 0, reflinked: 1, copied: 0, hardlinks: 0,
           unchanged: 0, metadata: 0, changed_during_run: 0}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fslinks.snapshots.plugins.module_utils._reflink_copy import reflink_copy
from ansible_collections.fslinks.snapshots.plugins.module_utils._diff import DiffRecorder
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import failure


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type='path', required=True),
            dest=dict(type='path', required=True),
            reflink=dict(type='str', default='auto', choices=['auto', 'always', 'never']),
            preserve=dict(type='list', elements='str', choices=['mode', 'ownership', 'timestamps', 'xattrs'],
                          default=['mode', 'ownership', 'timestamps', 'xattrs']),
            force=dict(type='bool', default=True),
            backup=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    recorder = DiffRecorder() if module._diff else None
    try:
        result = reflink_copy(
            params['src'], params['dest'], policy=params['reflink'], preserve=params['preserve'],
            force=params['force'], backup=params['backup'], dry_run=module.check_mode,
            report=recorder)
    except Exception as exc:    # the door: every failure is a message naming its path
        module.fail_json(**failure(exc, params['dest'], 'reflink_copy'))
    if result['backup_file'] is None:
        del result['backup_file']
    if recorder is not None:
        result['diff'] = recorder.diff()
    module.exit_json(src=params['src'], dest=params['dest'], **result)


if __name__ == '__main__':
    main()
