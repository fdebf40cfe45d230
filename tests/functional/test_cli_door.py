# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CLI's door: whatever goes wrong with a job's snapshot root (missing, a file, unreadable)
or inside the engine ends as one log line naming the root and the cause, a non-zero exit
code and, for run and prune, failure metrics; never a traceback or an empty listing."""

import contextlib
import errno
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers.processes import Job, cli_argv

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs, _snapshot
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import LinkError

pytestmark = pytest.mark.loopfs

QUIET = {'INVOCATION_ID': 'fslinks-test'}       # the CLI logs to syslog unless systemd runs it


def _cli(job, *args, user=None):
    argv = cli_argv(job.etc, *args)
    if user is not None:
        argv = ['setpriv', '--reuid=%d' % user, '--regid=%d' % user, '--clear-groups', '--inh-caps=-all'] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd='/',
                          env=dict(os.environ, **QUIET))


def _one_line_naming(done, *words):
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in done.stderr, done.stderr
    assert all(w in lines[0] for w in words), done.stderr


def _broken_root(job, case):
    if case == 'missing':                      # as if its filesystem were not mounted
        os.rename(job.dest, str(job.dest) + '.away')
    else:
        shutil.rmtree(job.dest)
        job.dest.write_text('not a directory\n')


@pytest.mark.parametrize('case, cause', [('missing', 'no such file or directory'),
                                         ('file', 'not a directory')])
def test_list_and_check_on_a_broken_root_say_why(case, cause, ext4, workdir):
    work = workdir(ext4)
    (work / 'src').mkdir()
    job = Job(work, work / 'src', work / 'snaps')
    assert _cli(job, 'run', 'data').returncode == 0
    _broken_root(job, case)
    for args in (['list', 'data'], ['list', 'data', '--json']):
        done = _cli(job, *args)
        assert done.returncode == _jobs.EX_FAIL and done.stdout == '', done
        _one_line_naming(done, str(job.dest), cause)
    done = _cli(job, 'check', 'data')
    assert done.returncode == _jobs.EX_STALE and str(job.dest) in done.stdout and cause in done.stdout, done


@pytest.mark.parametrize('command', ['run', 'prune'])
@pytest.mark.parametrize('case', ['missing', 'file'])
def test_run_and_prune_on_a_broken_root_fail_with_metrics(command, case, ext4, workdir):
    work = workdir(ext4)
    (work / 'src').mkdir()
    job = Job(work, work / 'src', work / 'snaps')
    assert _cli(job, 'run', 'data').returncode == 0
    assert job.metric('last_run_status') == 1
    _broken_root(job, case)
    done = _cli(job, command, 'data')
    # An uninitialized root is a bad request (64), but a failed run for the timers (1).
    assert done.returncode == (_jobs.EX_FAIL if command == 'run' else _jobs.EX_USAGE), done
    _one_line_naming(done, str(job.dest), 'is missing or not initialized')
    assert job.metric('last_run_status') == 0 and job.metric('snapshots_kept') == 0


@pytest.fixture
def nobody_job():
    """A job owned by nobody, whose root nobody then cannot read (mode 000).  Root reads
    everything, so the CLI runs as nobody; in /var/tmp, as the loop mounts live under a
    directory only root may enter."""
    if not shutil.which('setpriv'):
        pytest.skip('setpriv (util-linux) is needed to run the CLI unprivileged')
    base = Path(tempfile.mkdtemp(prefix='fslinks-door-', dir='/var/tmp'))
    try:
        base.chmod(0o755)
        (base / 'src').mkdir()
        job = Job(base, base / 'src', base / 'snaps', init=False)
        for path in (base, base / 'src', job.etc, job.metrics, job.etc / 'data.json'):
            os.chown(path, 65534, 65534)
        done = _cli(job, 'init', 'data', user=65534)
        assert done.returncode == 0, done.stderr
        job.dest.chmod(0)
        yield job
    finally:
        shutil.rmtree(base)


def test_unreadable_root(nobody_job):
    job = nobody_job
    done = _cli(job, 'list', 'data', user=65534)
    assert done.returncode == _jobs.EX_FAIL and done.stdout == '', done
    _one_line_naming(done, str(job.dest), 'permission denied')
    done = _cli(job, 'check', 'data', user=65534)
    assert done.returncode == _jobs.EX_STALE and 'permission denied' in done.stdout, done
    done = _cli(job, 'run', 'data', user=65534)
    assert done.returncode == _jobs.EX_FAIL, done
    _one_line_naming(done, str(job.dest), 'permission denied')    # the cause, not "not initialized"
    assert job.metric('last_run_status') == 0


def _main(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = _jobs.main(argv)
    return code, err.getvalue()


@pytest.mark.parametrize('raised, words', [
    # What a failed fsync of the root's directory fd raises: no file name of its own.
    (OSError(errno.EIO, os.strerror(errno.EIO)), 'input/output error'),
    # A bug in the engine.
    (KeyError('stats'), "unexpected error KeyError('stats')"),
])
@pytest.mark.parametrize('command', ['run', 'prune'])
def test_untyped_failure_inside_a_run_is_one_line_with_metrics(command, raised, words, ext4, workdir, monkeypatch):
    """The engine's run raising what it should not (stood in for by replacing _snapshot.run,
    as a failing disk cannot be had on demand): exit 1, one line naming the root and the
    cause, failure metrics."""
    monkeypatch.setenv('INVOCATION_ID', 'fslinks-test')
    work = workdir(ext4)
    (work / 'src').mkdir()
    job = Job(work, work / 'src', work / 'snaps')

    def failing(*_args, **_kwargs):
        raise raised

    monkeypatch.setattr(_snapshot, 'run', failing)
    code, err = _main(['--config-dir', str(job.etc), command, 'data'])
    assert code == _jobs.EX_FAIL
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(job.dest) in lines[0] and words.lower() in lines[0].lower(), err
    assert job.metric('last_run_status') == 0


def test_listing_an_unlistable_root_is_typed(ext4, workdir):
    """list_snapshots_at: [] only for a root that does not exist; a file is a typed error."""
    work = workdir(ext4)
    assert _snapshot.list_snapshots_at(str(work / 'nope')) == []
    (work / 'file').write_text('x')
    with pytest.raises(LinkError, match='%s: a component of the path is not a directory' % (work / 'file')):
        _snapshot.list_snapshots_at(str(work / 'file'))
    with pytest.raises(LinkError, match='no such file'):
        _snapshot.list_snapshots_at(str(work / 'nope'), missing_ok=False)
