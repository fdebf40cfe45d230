# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reliability suite: fault injection, races and hostile input (issue 6).

`make test` runs it short; `make reliability` runs it long (RELIABILITY_LONG=1) and renders
the tally into docs/reliability.md.  The tally and the outcome of every test here are written
to RELIABILITY_RESULTS (default tests/output/reliability/results.json) when the session ends.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import pytest

from helpers import faults

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE.parent / 'output' / 'reliability' / 'results.json'
_STARTED = time.time()
_OUTCOMES = {}


def _ours(nodeid):
    return 'reliability/' in nodeid.replace('\\', '/')


def pytest_runtest_logreport(report):
    if not _ours(report.nodeid):
        return
    if report.when == 'call' or report.outcome != 'passed':
        if hasattr(report, 'wasxfail'):
            outcome = 'xpassed' if report.passed else 'xfailed'
        else:
            outcome = report.outcome
        # setup errors and call failures both count once per test
        if report.nodeid not in _OUTCOMES or outcome != 'passed':
            _OUTCOMES[report.nodeid] = outcome


def pytest_sessionfinish(session):  # pylint: disable=unused-argument
    if not _OUTCOMES:
        return
    counts = {}
    for outcome in _OUTCOMES.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    data = {
        'mode': 'long' if faults.LONG else 'short',
        'seed': faults.SEED,
        'finished': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'seconds': round(time.time() - _STARTED, 1),
        'kernel': platform.release(),
        'python': platform.python_version(),
        'tests': counts,
        'failed_tests': sorted(n for n, o in _OUTCOMES.items() if o == 'failed'),
        'faults': faults.TALLY.as_json(),
    }
    path = Path(os.environ.get('RELIABILITY_RESULTS') or DEFAULT_RESULTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n')
    # The same table as docs/reliability.md, next to it (make reliability renders the docs page).
    spec = importlib.util.spec_from_file_location('fslinks_reliability_render', str(HERE / 'render.py'))
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    path.with_suffix('.md').write_text(render.render(data))


@pytest.fixture(autouse=True)
def _print_seed(request):
    # Shown with a failure: RELIABILITY_SEED=<seed> replays the random choices.
    print('RELIABILITY_SEED=%d RELIABILITY_LONG=%d (%s)' % (faults.SEED, faults.LONG, request.node.nodeid))


@pytest.fixture
def reachable(loop_workdir):
    """Let an unprivileged user traverse (not list) the session's loop mount directory."""
    mode = os.stat(loop_workdir).st_mode & 0o7777
    os.chmod(loop_workdir, 0o711)
    try:
        yield
    finally:
        os.chmod(loop_workdir, mode)
