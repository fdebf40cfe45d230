#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r"""
---
module: engine_install
short_description: Install the fslinks.snapshots engine on a host as a Python package
version_added: 0.1.0
description:
  - Writes the engine of this collection (the files of its C(plugins/module_utils/)) into O(path)
    as the Python package C(fslinks_snapshots), which the C(fslinks-snapshot) CLI of the
    R(fslinks.snapshots.snapshot_jobs,ansible_collections.fslinks.snapshots.snapshot_jobs_role) role imports.
  - The files travel inside this module's own payload, so one task installs them all; each is
    replaced atomically and only when its bytes differ; engine files of an older version that no
    longer exist are removed.
  - Used by the R(fslinks.snapshots.snapshot_jobs,ansible_collections.fslinks.snapshots.snapshot_jobs_role) role; rarely useful on its own.
author:
  - fslinks.snapshots contributors (@fslinks)
options:
  path:
    description:
      - Directory of the package (created, mode C(0755), if missing), for example
        C(/usr/local/lib/fslinks-snapshots/fslinks_snapshots).
    type: path
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The names of the files that change.
  platform:
    platforms: posix
    support: full
seealso:
  - module: fslinks.snapshots.hardlink_snapshot
"""

EXAMPLES = r"""
- name: Install the engine
  fslinks.snapshots.engine_install:
    path: /usr/local/lib/fslinks-snapshots/fslinks_snapshots
"""

RETURN = r"""
files:
  description: Names of the files written or removed (would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [_snapshot.py]
"""

import os

from ansible.module_utils.basic import AnsibleModule

# Every engine file, imported so that Ansible puts it into this module's payload.
from ansible_collections.fslinks.snapshots.plugins.module_utils import (
    _children, _diff, _errors, _extents, _facts, _fresh, _inspect, _ioctl, _jobs, _mounts, _options, _parallel, _pull,
    _reflink_copy, _restore, _retention, _serve, _snapshot, _transfer, _tree, _update, _walk,
)

ENGINE = (_children, _diff, _errors, _extents, _facts, _fresh, _inspect, _ioctl, _jobs, _mounts, _options, _parallel,
          _pull, _reflink_copy, _restore, _retention, _serve, _snapshot, _transfer, _tree, _update, _walk)
INIT = b'# fslinks.snapshots engine, installed by fslinks.snapshots.engine_install\n'


def engine_files():
    """{file name: bytes} of the engine, read back from wherever Ansible put
    it (a zip payload, or the collection itself)."""
    files = {'__init__.py': INIT}
    for mod in ENGINE:
        loader = getattr(mod, '__loader__', None)
        if hasattr(loader, 'get_data'):
            data = loader.get_data(mod.__file__)
        else:
            with open(mod.__file__, 'rb') as handle:
                data = handle.read()
        files[os.path.basename(mod.__file__)] = data
    return files


def _current(path, name):
    try:
        with open(os.path.join(path, name), 'rb') as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type='path', required=True)), supports_check_mode=True)
    path = module.params['path']
    if '\0' in path:
        module.fail_json(msg='path must not contain a NUL byte, got %r' % (path,), path=path)
    try:
        module.exit_json(**install(path, module.check_mode, module._diff))
    except Exception as exc:    # the door (exit_json exits by SystemExit, not caught here)
        module.fail_json(**_errors.failure(exc, path, 'engine_install'))


def install(path, check_mode, diff):
    """Write the engine files that differ into ``path``, remove stale ones;
    returns the module's result."""
    wanted = engine_files()
    existing = os.listdir(path) if os.path.isdir(path) else []
    write = sorted(n for n, data in wanted.items() if _current(path, n) != data)
    stale = sorted(n for n in existing if n.startswith('_') and n.endswith('.py') and n not in wanted)
    changed = bool(write or stale or not os.path.isdir(path))
    if changed and not check_mode:
        if not os.path.isdir(path):
            os.makedirs(path, 0o755)
        for name in write:
            tmp = os.path.join(path, '.%s.tmp' % name)
            with open(tmp, 'wb') as handle:
                handle.write(wanted[name])
            os.chmod(tmp, 0o644)
            os.rename(tmp, os.path.join(path, name))
        for name in stale:
            os.unlink(os.path.join(path, name))
    result = dict(changed=changed, path=path, files=write + stale)
    if diff:
        result['diff'] = {'before': ''.join('%s\n' % n for n in sorted(set(existing) & set(write + stale))),
                          'after': ''.join('%s\n' % n for n in write)}
    return result


if __name__ == '__main__':
    main()
