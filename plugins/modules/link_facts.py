#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
---
module: link_facts
short_description: Facts about reflink, hard link and snapshot capabilities of mounts and paths
version_added: 0.1.0
description:
  - Reports every mount of the host with its filesystem type and whether it can reflink
    (C(FICLONE)) and hard link, the facts of chosen paths, and whether pairs of files share their
    data blocks. Meant for playbooks that choose a method per host and for CI jobs that gate on a
    host's filesystems.
  - Reflink capability is V(true), V(false) or V(null) (unknown). XFS answers from its geometry
    flags (C(reflink=1) at mkfs time), btrfs and bcachefs can, ext2/3/4, tmpfs and FAT cannot.
    Others (NFS, ZFS, overlayfs, ...) are V(null) unless O(probe=true) proves it by cloning an
    anonymous temporary file, which leaves nothing behind.
  - Reads no file data; sharing is computed from the extent maps (C(FIEMAP)).
author:
  - fslinks.snapshots contributors (@fslinks)
options:
  paths:
    description:
      - Paths to describe under RV(ansible_facts.link_facts.paths). Symlinks are described, not followed.
    type: list
    elements: path
    default: []
  compare:
    description:
      - Pairs of regular files C([A, B]) to compare under RV(ansible_facts.link_facts.compare).
    type: list
    elements: list
    default: []
  probe:
    description:
      - Prove reflink capability where it is unknown, by cloning a temporary file in the directory
        (of a path, or the mountpoint of a mount) when it is writable.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
    support: full
    details: Linux only (reads C(/proc/self/mountinfo), uses Linux ioctls).
seealso:
  - module: fslinks.snapshots.reflink_copy
  - module: fslinks.snapshots.hardlink_snapshot
"""

EXAMPLES = r"""
- name: Learn what the data disk can do
  fslinks.snapshots.link_facts:
    paths: [/srv/data]

- name: CI gate, the data disk must be able to reflink
  ansible.builtin.assert:
    that: ansible_facts.link_facts.paths['/srv/data'].reflink
    fail_msg: /srv/data is on {{ ansible_facts.link_facts.paths['/srv/data'].fstype }}, which cannot reflink

- name: Is the copy really a reflink of the original?
  fslinks.snapshots.link_facts:
    compare:
      - [/var/lib/images/base.qcow2, /var/lib/images/web01.qcow2]
  register: shared

- name: Show how much is shared
  ansible.builtin.debug:
    msg: "{{ ansible_facts.link_facts.compare[0].shared_bytes | human_readable }} shared"

- name: List the mounts that can reflink
  ansible.builtin.debug:
    msg: "{{ ansible_facts.link_facts.mounts | selectattr('reflink') | map(attribute='mount') | list }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    link_facts:
      description: What the host's filesystems can do.
      returned: always
      type: dict
      contains:
        mounts:
          description:
            - Every mount in C(/proc/self/mountinfo) order, with C(mount), C(device), C(fstype),
              C(options), C(reflink) (true, false or null), C(hardlink) (true, false or null) and
              C(btrfs_subvolume) (the subvolume path shown for btrfs mounts, else null).
          returned: always
          type: list
          elements: dict
          sample: [{mount: /srv, device: /dev/vdb, fstype: xfs, options: "rw,relatime", reflink: true,
                    hardlink: true, btrfs_subvolume: null}]
        paths:
          description:
            - One entry per O(paths) element, keyed by the path as given. C(exists) is always there;
              for existing paths also C(type) (file, directory, link, fifo, char, block, socket),
              C(mount), C(fstype), C(device), C(inode), C(nlink), C(size), C(reflink) and
              C(btrfs_subvolume) (whether the path is the root of a btrfs subvolume).
          returned: always
          type: dict
          sample: {"/srv/data": {exists: true, type: directory, mount: /srv, fstype: xfs, device: /dev/vdb,
                                 inode: 128, nlink: 3, size: 42, reflink: true, btrfs_subvolume: false}}
        compare:
          description:
            - One entry per O(compare) pair, with C(a), C(b), C(same_inode), C(shared_bytes) (bytes
              of C(a) whose blocks are also C(b)'s) and C(fully_shared) (same size and every extent at
              the same place, as after a reflink).
          returned: always
          type: list
          elements: dict
          sample: [{a: /a, b: /b, same_inode: false, shared_bytes: 1048576, fully_shared: true}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import failure
from ansible_collections.fslinks.snapshots.plugins.module_utils._facts import link_facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type='list', elements='path', default=[]),
            compare=dict(type='list', elements='list', default=[]),
            probe=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    pairs = []
    for pair in module.params['compare']:
        if len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
            module.fail_json(msg='each compare entry must be a pair of paths [A, B], got %r' % (pair,))
        pairs.append(list(pair))
    try:
        facts = link_facts(module.params['paths'], pairs, probe=module.params['probe'])
    except Exception as exc:    # the door: every failure is a message naming its path
        paths = module.params['paths'] + [p for pair in pairs for p in pair]
        module.fail_json(**failure(exc, paths[0] if len(paths) == 1 else None, 'link_facts'))
    module.exit_json(changed=False, ansible_facts={'link_facts': facts})


if __name__ == '__main__':
    main()
