# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_jobs.validate_job: the JSON job configs the snapshot_jobs role writes and the CLI reads.
Valid configs come back with defaults filled and survive another round through JSON and
validation unchanged; invalid ones are refused with BadInput naming the offending key (the
wording is free to change, the key must be there: the message ends up in a task's output).

Paths live under a directory that does not exist, so validate_job's symlink check (realpath
must equal the path) holds and nothing is read or written: no root, no filesystem."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs, _options, _snapshot
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import BadInput

BASE = '/nonexistent-fslinks-unit'
DEFAULTS = dict(method='auto', keep={}, exclude=[], one_file_system=True, lock_timeout=0,
                max_age=2 * 86400, metrics_dir=None, schedule=None, workers=0)

job_names = st.from_regex(_jobs.JOB_NAME, fullmatch=True)
segments = st.text(alphabet='abcxyz019_-', min_size=1, max_size=8)
abs_paths = st.lists(segments, min_size=1, max_size=3).map(lambda parts: BASE + '/' + '/'.join(parts))
# A policy keeps everything ({}) or keeps something: all counts 0 is refused (tested apart).
keeps = st.dictionaries(st.sampled_from(['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly']),
                        st.integers(0, 1000), max_size=3).filter(lambda k: not k or any(k.values()))
excludes = st.lists(st.sampled_from(['*.tmp', '/cache/', 'build/', '**/.git', 'x?y', '[ab]*']), max_size=3)
optional = {
    'method': st.sampled_from(_snapshot.METHODS),
    'keep': keeps,
    'exclude': excludes,
    'one_file_system': st.booleans(),
    'lock_timeout': st.integers(0, 3600),
    'max_age': st.integers(1, 10 ** 7),
    'metrics_dir': abs_paths,
    'schedule': st.sampled_from(['hourly', 'daily', '*-*-* 03:00:00']),
    'workers': st.integers(0, _snapshot.MAX_WORKERS),
}


@st.composite
def valid_configs(draw):
    cfg = {'name': draw(job_names), 'src': draw(abs_paths), 'dest': draw(abs_paths)}
    for key in draw(st.sets(st.sampled_from(sorted(optional)))):
        # None means "not set" (Ansible fills unset options with None).
        cfg[key] = draw(st.one_of(st.none(), optional[key]))
    return cfg


@given(valid_configs())
def test_valid_configs_round_trip(cfg):
    out = _jobs.validate_job(dict(cfg))
    for key, value in cfg.items():
        if value is None:
            assert out[key] == DEFAULTS[key], key
        else:
            assert out[key] == value, key
    for key, default in DEFAULTS.items():
        if key not in cfg:
            assert out[key] == default, key
    assert set(out) == set(_jobs.JOB_KEYS)
    # What the role writes back and the CLI reads again is the same job.
    assert _jobs.validate_job(json.loads(json.dumps(out))) == out


# One JSON value of each type; bool is not an int here (JSON true is not a count).
SAMPLES = ['x', 3, True, 1.5, {}, []]


def fits(value, kind):
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


TYPE_CASES = [(o.name, value) for o in sorted(_options.JOB, key=lambda o: o.name) for value in SAMPLES
              if not fits(value, o.kind)]


@pytest.mark.parametrize('key,value', TYPE_CASES, ids=['%s=%r' % c for c in TYPE_CASES])
def test_a_value_of_the_wrong_type_is_refused_naming_the_key(key, value):
    cfg = {'name': 'data', 'src': BASE + '/src', 'dest': BASE + '/dest', key: value}
    with pytest.raises(BadInput) as exc:
        _jobs.validate_job(cfg)
    assert key in str(exc.value)


@given(valid_configs(), st.text(alphabet='abcdefghijklmnopqrstuvwxyz_', min_size=1, max_size=15)
       .filter(lambda k: k not in _jobs.JOB_KEYS))
def test_an_unknown_key_is_refused_naming_it(cfg, key):
    cfg[key] = 1
    with pytest.raises(BadInput) as exc:
        _jobs.validate_job(cfg)
    assert key in str(exc.value)


@pytest.mark.parametrize('key,value', [
    ('src', 'relative/path'), ('dest', ''), ('src', BASE + '/a\0b'), ('method', 'rsync'),
    ('keep', {'dayly': 3}), ('keep', {'last': -1}), ('keep', {'last': 0, 'daily': 0}), ('exclude', ['/']), ('max_age', 0),
    ('lock_timeout', -1), ('workers', _snapshot.MAX_WORKERS + 1), ('workers', -1),
])
def test_a_bad_value_is_refused_naming_the_key(key, value):
    cfg = {'name': 'data', 'src': BASE + '/src', 'dest': BASE + '/dest', key: value}
    with pytest.raises(BadInput) as exc:
        _jobs.validate_job(cfg)
    assert key in str(exc.value)


@given(st.one_of(st.text(max_size=70).filter(lambda n: not _jobs.JOB_NAME.match(n)), st.integers(), st.none()))
def test_a_bad_job_name_is_refused(name):
    with pytest.raises(BadInput) as exc:
        _jobs.validate_job({'name': name, 'src': BASE + '/src', 'dest': BASE + '/dest'})
    assert 'name' in str(exc.value)


@pytest.mark.parametrize('cfg', [[], 'data', None, 3])
def test_a_config_that_is_not_an_object_is_refused(cfg):
    with pytest.raises(BadInput):
        _jobs.validate_job(cfg)
