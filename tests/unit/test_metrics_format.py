# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_jobs.render_metrics writes node_exporter textfile metrics: one bad line and the collector
drops the whole file, silently, so the alerts built on it never fire.  Every rendering of
generated results is read back by a small strict parser of the Prometheus text exposition
format (0.0.4) and must say what the run did."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs

METRIC_NAME = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(r'\A(?P<name>%s)(?:\{(?P<labels>%s(?:,%s)*)?\})? (?P<value>\S+)(?: -?[0-9]+)?\Z'
                    % (METRIC_NAME, LABEL, LABEL))
# Go's ParseFloat as Prometheus uses it: decimal or exponent notation, or Inf/NaN.
VALUE = re.compile(r'\A[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z|\A[+-]?Inf\Z|\ANaN\Z')
TYPES = ('counter', 'gauge', 'histogram', 'summary', 'untyped')


class FormatError(AssertionError):
    pass


def parse(text):
    """{(metric, ((label, value), ...)): float} from exposition TEXT, or FormatError.

    Strict where the format is: HELP and TYPE at most once per metric and before its first
    sample, a metric's samples together, label syntax and escapes, numeric values, no
    duplicate series, a newline at the end.  Stricter than Prometheus in one respect: every
    metric must have both HELP and TYPE, and blank lines are refused (we write neither)."""
    if not text.endswith('\n'):
        raise FormatError('no newline at the end')
    helps, types, samples, finished = {}, {}, {}, set()
    current = None
    for n, line in enumerate(text[:-1].split('\n'), 1):
        where = 'line %d %r' % (n, line)
        if line.startswith('#'):
            parts = line.split(' ', 3)
            if len(parts) >= 3 and parts[1] in ('HELP', 'TYPE'):
                name = parts[2]
                if not re.fullmatch(METRIC_NAME, name):
                    raise FormatError('%s: bad metric name' % where)
                if name in finished or any(k[0] == name for k in samples):
                    raise FormatError('%s: %s after the samples of %s' % (where, parts[1], name))
                seen = helps if parts[1] == 'HELP' else types
                if name in seen:
                    raise FormatError('%s: second %s for %s' % (where, parts[1], name))
                if parts[1] == 'TYPE' and (len(parts) != 4 or parts[3] not in TYPES):
                    raise FormatError('%s: bad type' % where)
                if parts[1] == 'HELP' and len(parts) == 4 and re.search(r'\\(?![\\n])', parts[3]):
                    raise FormatError('%s: bad escape in HELP' % where)
                seen[name] = parts[3] if len(parts) == 4 else ''
            continue    # any other comment is ignored, as by Prometheus
        if not line:
            raise FormatError('%s: blank line' % where)
        m = SAMPLE.match(line)
        if not m:
            raise FormatError('%s: not a sample' % where)
        name, labels_text, value = m.group('name'), m.group('labels'), m.group('value')
        if name not in helps or name not in types:
            raise FormatError('%s: sample before HELP and TYPE of %s' % (where, name))
        if current != name:
            if name in finished:
                raise FormatError('%s: samples of %s are not together' % (where, name))
            if current is not None:
                finished.add(current)
            current = name
        labels = re.findall(LABEL, labels_text or '')
        if len({k for k, _v in labels}) != len(labels):
            raise FormatError('%s: a label twice' % where)
        if not VALUE.match(value):
            raise FormatError('%s: value %r is not a number' % (where, value))
        key = (name, tuple(sorted(labels)))
        if key in samples:
            raise FormatError('%s: duplicate series' % where)
        samples[key] = float(value.replace('Inf', 'inf').replace('NaN', 'nan'))
    return samples


# ---------------------------------------------------------------- the parser is not blind

GOOD = '# HELP m_x Some help.\n# TYPE m_x gauge\nm_x{job="a",how="b"} 1.5\nm_x{job="b"} 2\n'


def test_the_parser_reads_good_text():
    assert parse(GOOD) == {('m_x', (('how', 'b'), ('job', 'a'))): 1.5, ('m_x', (('job', 'b'),)): 2.0}


@pytest.mark.parametrize('bad', [
    GOOD[:-1],                                                   # no final newline
    'm_x 1\n# HELP m_x h\n# TYPE m_x gauge\n',                   # sample first
    '# HELP m_x h\nm_x 1\n',                                     # no TYPE
    '# HELP m_x h\n# TYPE m_x gauge\n# TYPE m_x gauge\nm_x 1\n',  # TYPE twice
    '# HELP m_x h\n# TYPE m_x gaug\nm_x 1\n',                    # unknown type
    '# HELP m_x h\n# TYPE m_x gauge\nm_x{job=a} 1\n',            # unquoted label value
    '# HELP m_x h\n# TYPE m_x gauge\nm_x{job="a} 1\n',           # unterminated
    '# HELP m_x h\n# TYPE m_x gauge\nm_x{job="a\\q"} 1\n',       # bad escape
    '# HELP m_x h\n# TYPE m_x gauge\nm_x{1job="a"} 1\n',         # bad label name
    '# HELP m_x h\n# TYPE m_x gauge\nm_x{job="a",job="b"} 1\n',  # label twice
    '# HELP m_x h\n# TYPE m_x gauge\nm_x one\n',                 # not a number
    '# HELP m_x h\n# TYPE m_x gauge\nm_x None\n',
    '# HELP m_x h\n# TYPE m_x gauge\nm_x 1\nm_x 2\n',            # duplicate series
    '# HELP m_x h\n# TYPE m_x gauge\n\nm_x 1\n',                 # blank line
    '# HELP m_x h\n# TYPE m_x gauge\n# HELP m_y h\n# TYPE m_y gauge\nm_x 1\nm_y 1\nm_x{a="b"} 1\n',
    '# HELP 1m h\n# TYPE 1m gauge\n1m 1\n',                     # bad metric name
])
def test_the_parser_refuses_bad_text(bad):
    with pytest.raises(FormatError):
        parse(bad)


# ---------------------------------------------------------------- render_metrics

job_names = st.from_regex(_jobs.JOB_NAME, fullmatch=True)
counts = st.integers(0, 10 ** 12)
times = st.floats(0, 4e9, allow_nan=False)
stats = st.fixed_dictionaries({}, optional={k: counts for k in (
    'linked', 'reflinked', 'copied', 'bytes_linked', 'bytes_cloned', 'bytes_copied', 'skipped')})
kept = st.lists(st.just('/x/2026-01-01T000000Z'), max_size=5)
space = st.fixed_dictionaries({'free_bytes': counts, 'size_bytes': counts, 'min_free_bytes': st.none() | counts})
changed = st.fixed_dictionaries({'added': counts, 'modified': counts, 'deleted': st.none() | counts})
pulled = st.fixed_dictionaries({}, optional={k: counts for k in ('received_bytes', 'literal_bytes', 'matched_bytes')})
results = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    'stats': stats, 'kept': kept, 'future_dated': kept, 'space': space, 'changed_files': st.none() | changed,
    'warnings': st.lists(st.text(max_size=5), max_size=3), 'rsync': pulled}))
errors = st.one_of(st.none(), st.builds(RuntimeError, st.text(max_size=20)))


@given(job_names, results, times, st.floats(0, 1e6, allow_nan=False), errors, times, st.none() | counts)
def test_every_rendering_is_valid_and_says_what_happened(job, result, started, duration, error, last_success,
                                                         max_age):
    text = _jobs.render_metrics(job, result, started, duration, error, last_success, max_age)
    samples = parse(text)
    m = 'fslinks_snapshot_'
    assert all(dict(labels).get('job') == job for _name, labels in samples)

    def value(name, **labels):
        return samples[(m + name, tuple(sorted(dict(labels, job=job).items())))]

    assert value('last_run_status') == (0 if error else 1)
    assert math.isclose(value('last_run_timestamp_seconds'), started, abs_tol=1e-3)
    assert math.isclose(value('last_success_timestamp_seconds'), last_success if error else started, abs_tol=1e-3)
    assert math.isclose(value('last_run_duration_seconds'), duration, abs_tol=1e-3)
    stats = (result or {}).get('stats') or {}
    for how in ('linked', 'reflinked', 'copied'):
        assert value('files', how=how) == stats.get(how, 0)
    for how in ('linked', 'cloned', 'copied'):
        assert value('bytes', how=how) == stats.get('bytes_' + how, 0)
    assert value('snapshots_kept') == len((result or {}).get('kept') or [])
    assert value('future_dated') == len((result or {}).get('future_dated') or [])
    assert value('skipped_entries') == stats.get('skipped', 0)
    room = (result or {}).get('space')
    extra = 0
    if max_age is not None:
        assert value('max_age_seconds') == max_age
        extra += 1
    if result is not None:
        assert value('warnings') == len(result.get('warnings') or [])
        extra += 1
    if (result or {}).get('rsync'):
        for how in ('received', 'literal', 'matched'):
            assert value('pull_bytes', how=how) == result['rsync'].get(how + '_bytes', 0)
        extra += 3
    if room:
        assert value('free_bytes') == room['free_bytes'] and value('size_bytes') == room['size_bytes']
        extra += 2
        if room['min_free_bytes'] is not None:
            assert value('min_free_bytes') == room['min_free_bytes']
            extra += 1
    for how, count in sorted(((result or {}).get('changed_files') or {}).items()):
        if count is not None:
            assert value('changed_files', how=how) == count
            extra += 1
    assert len(samples) == 13 + extra
