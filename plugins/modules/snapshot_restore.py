#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapshot_restore
short_description: Put a snapshot, or one path of it, back into the live tree or elsewhere
version_added: 0.1.0
description:
  - Restores snapshot O(snapshot) of the snapshot root O(root) (the
    O(fslinks.snapshots.hardlink_snapshot#module:dest) of a snapshot task, or the C(dest) of a
    snapshot job), the whole tree or O(path) inside it, into the tree the snapshot was taken of
    (the C(src) in its record), or into O(dest).
  - Reflinks where the snapshot and the target are on one filesystem that can clone (XFS, btrfs;
    a large file comes back at once and shares its blocks with the snapshot), copies elsewhere.
  - Each file is written under a temporary name and renamed over the old one, and a directory
    the target lacks is built aside and renamed into place, so a restore that fails or is killed
    leaves every path as it was or as restored; running it again completes it. A copied file
    gets its name only once its data is on disk, so a crash right after the restore does not
    leave it empty either.
  - Before anything of the live tree is overwritten or deleted, a guard snapshot of it is taken
    in the same root (a normal snapshot whose record says it was made before a restore), unless
    O(guard=false). O(snapshot=latest) never means a guard snapshot.
  - Idempotent; a second identical restore reports C(changed=false) and takes no guard snapshot.
  - Symlinks in the snapshot are restored as symlinks, never followed; a symlink or a file on the
    way to O(path) in the target is refused, as are paths with C(..) or outside the tree.
author:
  - fslinks.snapshots contributors (@fslinks)
options:
  root:
    description:
      - The snapshot root, for example C(/srv/.snapshots/data).
    type: path
    required: true
  snapshot:
    description:
      - The snapshot's name (as listed by M(fslinks.snapshots.snapshot_info)), or V(latest), the
        newest complete snapshot that is not a guard snapshot.
    type: str
    default: latest
  path:
    description:
      - What to restore, relative to the snapshot's tree (V(etc/app.conf)), or an absolute path
        inside the snapshot's source (V(/srv/data/etc/app.conf)); default the whole tree.
    type: str
  dest:
    description:
      - The directory to restore under, instead of the source in the snapshot's record; O(path)
        comes back at its place below it (as C(restic restore --target)). Made if missing (mode
        0700) when its parent exists.
    type: path
  mirror:
    description:
      - Make the target exactly the snapshot's content, deleting what the snapshot does not have
        (names the snapshot's job excluded are kept, and another filesystem mounted inside is
        never entered). Without it, entries are put back and nothing is deleted.
    type: bool
    default: false
  guard:
    description:
      - Take a guard snapshot of the live tree before changing or deleting anything in it.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: One line per entry that would be restored or deleted (metadata, never file contents).
  platform:
    platforms: posix
    support: full
    details: Linux only (uses Linux ioctls).
seealso:
  - module: fslinks.snapshots.snapshot_info
  - module: fslinks.snapshots.hardlink_snapshot
"""

EXAMPLES = r"""
- name: One file back from the newest snapshot
  fslinks.snapshots.snapshot_restore:
    root: /srv/.snapshots/data
    path: etc/app.conf

- name: The whole tree as it was on a given day, exactly (what it did not have is deleted)
  fslinks.snapshots.snapshot_restore:
    root: /srv/.snapshots/data
    snapshot: 2026-11-21T103000Z
    mirror: true

- name: A copy of an old tree to look at, next to the live one
  fslinks.snapshots.snapshot_restore:
    root: /srv/.snapshots/data
    snapshot: 2026-11-21T103000Z
    dest: /srv/restored
  register: restored

- name: Say what came back
  ansible.builtin.debug:
    msg: "{{ restored.restored }} entries from {{ restored.snapshot }} to {{ restored.target }} by {{ restored.method }}"
"""

RETURN = r"""
snapshot:
  description: The name of the snapshot restored.
  returned: always
  type: str
  sample: 2026-11-21T103000Z
target:
  description: The path restored to.
  returned: always
  type: str
  sample: /srv/data/etc/app.conf
method:
  description: V(reflink) when data was cloned, V(copy) when any was copied, V(none) when no data moved.
  returned: always
  type: str
  sample: reflink
restored:
  description: Entries written, created or whose metadata was set back.
  returned: always
  type: int
  sample: 3
deleted:
  description: Entries deleted (only with O(mirror=true)).
  returned: always
  type: int
  sample: 0
guard_snapshot:
  description: The guard snapshot taken of the live tree before it was changed, or V(null).
  returned: always
  type: str
  sample: /srv/.snapshots/data/2026-11-22T081500Z
changes:
  description: What was (or in check mode would be) done, one item per entry, paths relative to the tree.
  returned: always
  type: list
  elements: dict
  sample: [{path: etc/app.conf, action: reflink}]
stats:
  description: The counts of the walk (as RV(fslinks.snapshots.hardlink_snapshot#module:stats)).
  returned: always
  type: dict
  sample: {files: 1, reflinked: 1, copied: 0, metadata: 0, unchanged: 0}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fslinks.snapshots.plugins.module_utils._diff import DiffRecorder
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import failure
from ansible_collections.fslinks.snapshots.plugins.module_utils._restore import restore


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path', required=True),
            snapshot=dict(type='str', default='latest'),
            path=dict(type='str'),
            dest=dict(type='path'),
            mirror=dict(type='bool', default=False),
            guard=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    recorder = DiffRecorder() if module._diff else None
    try:
        result = restore(p['root'], snapshot=p['snapshot'], path=p['path'], to=p['dest'], mirror=p['mirror'],
                         guard=p['guard'], dry_run=module.check_mode, report=recorder)
    except Exception as exc:    # the door: every failure is a message naming its path
        module.fail_json(**failure(exc, p['root'], 'snapshot_restore'))
    if recorder is not None:
        result['diff'] = recorder.diff()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
