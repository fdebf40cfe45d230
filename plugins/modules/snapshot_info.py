#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapshot_info
short_description: List the snapshots under a snapshot root, with their age, method and space
version_added: 0.1.0
description:
  - Reads the snapshot root O(root) (the O(fslinks.snapshots.hardlink_snapshot#module:dest) of a
    snapshot task, or the C(dest) of a snapshot job) and returns its
    snapshots, oldest first, with their creation time, age, method and the counts of the run that
    made each one (from the record C(ROOT/NAME.json) next to it).
  - Read-only; changes nothing and reports C(changed=false), in check mode too.
  - With O(usage=true), also what each snapshot holds alone (what deleting it would free) and
    what it shares with other snapshots or with the live source, computed from the physical
    extents (C(FIEMAP)) and link counts of every file without reading file data. This walks every
    snapshot, so it takes time on large trees.
author:
  - fslinks.snapshots contributors (@fslinks)
options:
  root:
    description:
      - The snapshot root, for example C(/srv/.snapshots/data).
    type: path
    required: true
  usage:
    description:
      - Add RV(snapshots[].exclusive_bytes), RV(snapshots[].shared_bytes) and RV(usage).
      - Counted in allocated bytes of file data (whole blocks, as C(du) counts); data still used by
        the source named in the newest record counts as shared.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
    support: full
    details: Linux only (uses Linux ioctls).
seealso:
  - module: fslinks.snapshots.hardlink_snapshot
"""

EXAMPLES = r"""
- name: Learn about the snapshots of /srv/data
  fslinks.snapshots.snapshot_info:
    root: /srv/.snapshots/data
  register: snaps

- name: The newest snapshot on every host is younger than a day
  ansible.builtin.assert:
    that:
      - snaps.latest is not none
      - (snaps.snapshots | selectattr('complete') | last).age_seconds < 86400
    fail_msg: "newest snapshot in /srv/.snapshots/data: {{ snaps.latest | default('none', true) }}"

- name: What each snapshot would free
  fslinks.snapshots.snapshot_info:
    root: /srv/.snapshots/data
    usage: true
  register: space

- name: Show it
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.exclusive_bytes | human_readable }} alone, {{ item.shared_bytes | human_readable }} shared"
  loop: "{{ space.snapshots | selectattr('complete') }}"
"""

RETURN = r"""
root:
  description: The snapshot root, as given.
  returned: always
  type: str
  sample: /srv/.snapshots/data
latest:
  description: Name of the newest complete snapshot, or V(null) when there is none.
  returned: always
  type: str
  sample: 2026-11-21T103000Z
snapshots:
  description:
    - The snapshots, oldest first, and the leftovers of runs that did not finish
      (C(NAME.partial), with C(complete=false)).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The snapshot's name (its UTC start time).
      type: str
      sample: 2026-11-21T103000Z
    path:
      description: Its full path.
      type: str
      sample: /srv/.snapshots/data/2026-11-21T103000Z
    created:
      description:
        - When its run started, ISO-8601 UTC, from its record (from its name without one). After a run
          with the clock ahead, later snapshots are named after that one but keep their real time here.
      type: str
      sample: "2026-11-21T10:30:00Z"
    age_seconds:
      description: Seconds since RV(snapshots[].created) (negative for a snapshot dated in the future).
      type: int
      sample: 3600
    future_dated:
      description:
        - V(true) when RV(snapshots[].created) is more than 15 minutes after now (the clock was ahead
          when it was made, or went back since).
      type: bool
      sample: false
    method:
      description: C(btrfs), C(reflink), C(hardlink) or C(copy), from its record; V(null) without one.
      type: str
      sample: reflink
    complete:
      description: V(true) for a published snapshot, V(false) for a run's leftover.
      type: bool
      sample: true
    guard:
      description: V(true) for a guard snapshot, which a restore took of the live tree before changing it.
      type: bool
      sample: false
    files:
      description: Regular files in it, from its record (V(null) without one).
      type: int
      sample: 1200
    stats:
      description: The counts of the run that made it (as RV(fslinks.snapshots.hardlink_snapshot#module:stats)), or V(null).
      type: dict
      sample: {files: 1200, linked: 1190, copied: 10, bytes_copied: 40960}
    exclusive_bytes:
      description: Allocated bytes that only this snapshot holds (deleting it alone frees them).
      returned: when O(usage=true), for complete snapshots
      type: int
      sample: 40960
    shared_bytes:
      description: Allocated bytes it shares with other snapshots, the source or other files.
      returned: when O(usage=true), for complete snapshots
      type: int
      sample: 1048576
    estimate:
      description: Present and V(true) when its figures are estimates (RV(usage) says why).
      returned: when O(usage=true) and the figures are estimates
      type: bool
      sample: true
usage:
  description:
    - C(total_bytes), the data of all snapshots on disk counted once; C(chain_exclusive_bytes),
      what deleting them all would free; C(live), the source compared against (or V(null));
      C(bytes), always C(allocated); C(estimate) and, when true, C(reasons).
  returned: when O(usage=true)
  type: dict
  sample: {total_bytes: 2097152, chain_exclusive_bytes: 81920, live: /srv/data, bytes: allocated, estimate: false}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import failure
from ansible_collections.fslinks.snapshots.plugins.module_utils._inspect import describe, record_source


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path', required=True),
            usage=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    root = module.params['root']
    if not os.path.isabs(root):
        module.fail_json(msg='root must be an absolute path, got %s' % root, path=root)
    try:
        live, excluder = record_source(root) if module.params['usage'] else (None, None)
        result = describe(root, with_usage=module.params['usage'], live=live, excluder=excluder)
    except Exception as exc:    # the door: every failure is a message naming its path
        module.fail_json(**failure(exc, root, 'snapshot_info'))
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
