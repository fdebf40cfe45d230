# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot options are defined once, in module_utils/_options.py.  The role cannot
import them (its argument specs and job defaults are YAML, its job config a template), so
these tests hold the role's copies to that definition: names, types, defaults, choices."""

import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.fslinks.snapshots.plugins.module_utils import _options
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import BadInput
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request

ROLE = Path(__file__).resolve().parents[2] / 'roles' / 'snapshot_jobs'
# Per-job settings of the role that the engine never sees (the schedule, hooks, sandbox, and for a
# pull the inventory host the role sets up as the client, or the host key given for one outside it).
ROLE_ONLY = {'cron', 'randomized_delay', 'state', 'before', 'after', 'sandbox', 'client', 'host_key'}
# Job keys the role fills itself: metrics_dir from snapshot_jobs_metrics_dir, for every job.
ROLE_FILLS = {'metrics_dir'}
# Job keys whose default the role decides (a schedule for timers, max_age from the schedule).
ROLE_DEFAULTS = {'schedule', 'max_age', 'name'}


def _role_job_options():
    specs = yaml.safe_load((ROLE / 'meta' / 'argument_specs.yml').read_text())
    return specs['argument_specs']['main']['options']['snapshot_jobs']['options']


def _job_defaults():
    return yaml.safe_load((ROLE / 'vars' / 'main.yml').read_text())['__snapshot_jobs_job_defaults']


def test_role_job_options_are_the_engine_options():
    role = _role_job_options()
    assert set(role) - ROLE_ONLY == set(_options.JOB_KEYS) - ROLE_FILLS


@pytest.mark.parametrize('option', [o for o in _options.JOB if o.name not in ROLE_FILLS], ids=lambda o: o.name)
def test_role_spec_matches_the_definition(option):
    spec = _role_job_options()[option.name]
    assert spec['type'] == option.ansible_type
    assert spec.get('required', False) == option.required
    assert spec.get('choices') == (list(option.choices) if option.choices else None)
    assert spec.get('elements') == option.elements
    subs = dict((k, v['type']) for k, v in (spec.get('options') or {}).items())
    assert subs == dict(option.suboptions or ())
    if option.name not in ROLE_DEFAULTS:
        assert spec.get('default') == option.default


def test_role_job_defaults_are_the_spec_defaults():
    """The role combines each job with these defaults (argument specs only check)."""
    role = _role_job_options()
    with_default = dict((name, spec['default']) for name, spec in role.items() if 'default' in spec)
    assert _job_defaults() == with_default


def test_role_job_config_writes_every_job_key():
    template = (ROLE / 'templates' / 'job.json.j2').read_text()
    assert set(re.findall(r"^\s*'(\w+)':", template, re.M)) == set(_options.JOB_KEYS)


def test_module_spec_is_derived():
    spec = _options.argument_spec()
    assert spec['method'] == {'type': 'str', 'default': 'auto', 'choices': list(_options.METHODS)}
    assert spec['lock_timeout'] == {'type': 'int', 'default': 0}
    assert spec['src'] == {'type': 'path', 'required': True}
    assert set(spec['keep']['options']) == {'last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly', 'min_free'}
    assert spec['keep']['options']['min_free'] == {'type': 'str'}
    assert spec['on_error'] == {'type': 'str', 'default': 'skip', 'choices': ['skip', 'fail']}


@pytest.mark.parametrize('value', [0.5, float('nan'), True, '1'])
def test_lock_timeout_is_a_whole_number_everywhere(value, tmp_path):
    """A request and a job config take the same lock_timeout: whole seconds."""
    with pytest.raises(BadInput, match='lock_timeout must be a int'):
        Request(str(tmp_path), str(tmp_path / 'snaps'), lock_timeout=value)
    with pytest.raises(BadInput, match='job data: lock_timeout must be a int'):
        _options.settle({'lock_timeout': value}, [_options.BY_NAME['lock_timeout']], 'job data: ')


def test_defaults_are_fresh_copies():
    first = _options.settle({}, [_options.BY_NAME['exclude']])
    first['exclude'].append('*.tmp')
    assert _options.settle({}, [_options.BY_NAME['exclude']]) == {'exclude': []}
