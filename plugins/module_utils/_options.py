# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of a snapshot request and of a scheduled job, defined once.

Each option has its name, JSON type, default, choices, check and a one-line
doc here.  ``_snapshot.Request`` validates with them, ``_jobs.validate_job``
validates job configs with them, and the hardlink_snapshot module derives its
argument_spec from them.  The role's meta/argument_specs.yml and job defaults
cannot import Python: tests/unit/test_options.py holds them to this file.
"""

import os
import re

from . import _pull, _retention, _walk
from ._errors import BadInput
from ._tree import Excluder

METHODS = ('auto', 'btrfs', 'reflink', 'hardlink', 'copy')
ON_ERROR = _walk.ON_ERROR
MAX_WORKERS = 64
JOB_NAME = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z')

_ANSIBLE_TYPE = {str: 'str', dict: 'dict', list: 'list', bool: 'bool', int: 'int'}


class Option(object):
    """One option.  ``check(value)`` returns the value to use or raises
    ValueError with a sentence that names the option."""

    def __init__(self, name, kind, default, doc, choices=None, check=None, required=False,
                 ansible_type=None, elements=None, suboptions=None):
        self.name, self.kind, self.default, self.doc = name, kind, default, doc
        self.choices, self.check, self.required = choices, check, required
        self.ansible_type = ansible_type or _ANSIBLE_TYPE[kind]
        self.elements, self.suboptions = elements, suboptions

    def settle(self, value, where=''):
        """The checked value, or a copy of the default for None (Ansible and
        job configs both leave unset options as None)."""
        if value is None and not self.required:
            return _copy(self.default)
        try:
            if value is not None and not _is(value, self.kind):
                raise ValueError('%s must be a %s, got %r' % (self.name, self.kind.__name__, value))
            if self.choices is not None and value not in self.choices:
                raise ValueError('%s must be one of %s, not %r' % (self.name, ', '.join(self.choices), value))
            return self.check(value) if self.check else value
        except ValueError as exc:
            raise BadInput(where + str(exc), value if self.ansible_type == 'path' and isinstance(value, str) else None)

    def ansible_spec(self):
        spec = {'type': self.ansible_type}
        if self.required:
            spec['required'] = True
        else:
            spec['default'] = _copy(self.default)
        if self.choices is not None:
            spec['choices'] = list(self.choices)
        if self.elements is not None:
            spec['elements'] = self.elements
        if self.suboptions is not None:
            spec['options'] = dict((k, {'type': t}) for k, t in self.suboptions)
        return spec


def _is(value, kind):
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)     # JSON true is no count
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _copy(value):
    return type(value)(value) if isinstance(value, (dict, list)) else value


def _path(name):
    def check(value):
        if not isinstance(value, str) or not os.path.isabs(value) or '\0' in value:
            raise ValueError('%s must be an absolute path without NUL bytes, got %r' % (name, value))
        return value
    return check


def _src(value):
    """A local absolute path, or rsync's [USER@]HOST:/PATH (a pull)."""
    if isinstance(value, str) and not value.startswith('/') and ':' in value:
        _pull.parse_remote(value)       # raises ValueError naming what is wrong
        return value
    return _path('src')(value)


def _port(value):
    if not 1 <= value <= 65535:
        raise ValueError('ssh_port must be 1 to 65535, got %r' % (value,))
    return value


def _bwlimit(value):
    if value < 0:
        raise ValueError('bwlimit must be 0 (no limit) or more KiB/s, got %r' % (value,))
    return value


def _keep(value):
    return _retention.parse_keep(value)


def _exclude(value):
    Excluder(value)
    return list(value)


def _seconds(name, least):
    def check(value):
        if value < least:
            raise ValueError('%s must be %d or more seconds, got %r' % (name, least, value))
        return value
    return check


def _workers(value):
    if not 0 <= value <= MAX_WORKERS:
        raise ValueError('workers must be 0 (automatic) to %d, got %r' % (MAX_WORKERS, value))
    return value


def _job_name(value):
    if not isinstance(value, str) or not JOB_NAME.match(value):
        raise ValueError('job name %r must be 1-64 letters, digits, "_", "-" or "." (not starting with a sign)'
                         % (value,))
    return value


REQUEST = (
    Option('src', str, None, 'Absolute path of the directory to snapshot, or [USER@]HOST:/PATH to pull it '
           'with rsync over ssh (docs/pull.md).', check=_src, required=True, ansible_type='path'),
    Option('dest', str, None, 'Absolute path of the snapshot root.',
           check=_path('dest'), required=True, ansible_type='path'),
    Option('method', str, 'auto', 'auto picks btrfs, reflink or hardlink; the others force one.', choices=METHODS),
    Option('keep', dict, {}, 'Retention counts by rule and min_free (docs/retention.md); empty keeps all, '
           'all counts zero is refused.',
           check=_keep, suboptions=[(k, 'int') for k in _retention.KEEP_KEYS] + [(_retention.MIN_FREE, 'str')]),
    Option('exclude', list, [], 'rsync-style patterns to leave out, relative to src.',
           check=_exclude, elements='str'),
    Option('one_file_system', bool, True, 'Do not descend into other filesystems below src.'),
    Option('lock_timeout', int, 0, 'Seconds to wait for a run on the same dest; 0 fails at once.',
           check=_seconds('lock_timeout', 0)),
    Option('workers', int, 0, 'Processes building the snapshot; 0 picks per dest filesystem.', check=_workers),
    Option('on_error', str, 'skip', 'An entry that cannot be read or written: skip it (on the record) or fail the run.',
           choices=ON_ERROR),
    # A remote src only (a pull): how ssh reaches the host.
    Option('ssh_key', str, None, 'Private key ssh uses for a remote src (none: ssh\'s default keys).',
           check=_path('ssh_key'), ansible_type='path'),
    Option('ssh_port', int, None, 'ssh port of a remote src (none: 22, or what ssh_config says).', check=_port),
    Option('ssh_known_hosts', str, None, 'known_hosts file holding the host key of a remote src (none: ssh\'s '
           'default files); host keys are always checked.', check=_path('ssh_known_hosts'), ansible_type='path'),
    Option('bwlimit', int, 0, 'KiB/s a pull may read from the remote src (rsync --bwlimit); 0 is no limit.',
           check=_bwlimit),
)

# A job config (JOB.json, written by the role) is a request with a name, a
# staleness limit for `check` and where its metrics go.
JOB = (
    Option('name', str, None, 'Job name; names the config, timer and metrics.', check=_job_name, required=True),
) + REQUEST + (
    Option('max_age', int, 2 * 86400, 'Seconds after which `check` calls the newest snapshot stale.',
           check=_seconds('max_age', 1)),
    Option('metrics_dir', str, None, 'node_exporter textfile directory; none writes no metrics.'),
    Option('schedule', str, None, 'The schedule, for the record (timers and cron run the job).'),
)

JOB_KEYS = tuple(o.name for o in JOB)
BY_NAME = dict((o.name, o) for o in JOB)


def settle(given, options, where=''):
    """{name: checked value} for ``options`` from the dict ``given``."""
    return dict((o.name, o.settle(given.get(o.name), where)) for o in options)


def argument_spec(options=REQUEST):
    """The AnsibleModule argument_spec of ``options``."""
    return dict((o.name, o.ansible_spec()) for o in options)
