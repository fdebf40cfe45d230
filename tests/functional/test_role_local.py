# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot_jobs role applied to this machine with every path it writes redirected into a
sandbox (extra vars outrank role vars): deploy, run the deployed CLI, idempotence, check mode,
remove a job (its snapshots stay), and bad variables stopped by the argument spec.
Molecule (molecule/default) runs the same role on containers with systemd and cron."""

import json
import subprocess
from pathlib import Path

import pytest

from helpers.ansible_run import run_playbook

pytestmark = [pytest.mark.loopfs, pytest.mark.ansible]

PLAY = '''
- hosts: localhost
  gather_facts: false
  roles:
    - role: fslinks.snapshots.snapshot_jobs
'''


def apply(sandbox, jobs, check=False):
    extra = {
        'snapshot_jobs': jobs,
        'snapshot_jobs_scheduler': 'cron',
        'snapshot_jobs_install_dir': str(sandbox / 'lib'),
        'snapshot_jobs_config_dir': str(sandbox / 'etc'),
        'snapshot_jobs_metrics_dir': str(sandbox / 'metrics'),
        '__snapshot_jobs_cli': str(sandbox / 'bin' / 'fslinks-snapshot'),
        '__snapshot_jobs_cron_dir': str(sandbox / 'cron.d'),
        '__snapshot_jobs_unit_dir': str(sandbox / 'units'),
    }
    for sub in ('bin', 'cron.d', 'units'):
        (sandbox / sub).mkdir(exist_ok=True)
    return run_playbook(PLAY, extra_args=['-e', json.dumps(extra)], check=check)


def changed(proc):
    recap = [line for line in proc.stdout.splitlines() if line.startswith('localhost')][-1]
    return int(recap.split('changed=')[1].split()[0])


def test_deploy_run_remove(xfs, workdir):
    w = workdir(xfs)
    src = w / 'src'
    src.mkdir()
    (src / 'file').write_text('data\n')
    job = {'name': 'data', 'src': str(src), 'dest': str(w / 'snaps'), 'keep': {'last': 2},
           'before': [['touch', str(w / 'before-ran')]],
           'after': [['sh', '-c', 'echo "$FSLINKS_JOB $FSLINKS_RESULT" > "$0"', str(w / 'after-ran')]]}

    dry = apply(w, [job], check=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert not (w / 'etc' / 'data.json').exists() and not (w / 'snaps').exists()

    first = apply(w, [job])
    assert first.returncode == 0, first.stdout + first.stderr
    again = apply(w, [job])
    assert again.returncode == 0 and changed(again) == 0, again.stdout

    cron = (w / 'cron.d' / 'fslinks-snapshot-data').read_text()
    wrapper = w / 'lib' / 'cron-data'
    assert '@hourly root %s\n' % wrapper in cron and 'MAILTO=root\n' in cron
    assert json.loads((w / 'etc' / 'data.json').read_text())['max_age'] == 7200
    assert (w / 'snaps' / '.fslinks-snapshot.lock').exists()           # initialized by the role
    engine = Path(__file__).parents[2] / 'plugins' / 'module_utils' / '_snapshot.py'
    assert (w / 'lib' / 'fslinks_snapshots' / '_snapshot.py').read_bytes() == engine.read_bytes()

    # The deployed CLI, with the deployed engine, as cron would run it.
    cli = [str(w / 'bin' / 'fslinks-snapshot'), '--config-dir', str(w / 'etc')]
    for _round in range(3):
        done = subprocess.run(cli + ['run', 'data'], capture_output=True, text=True, check=False)
        assert done.returncode == 0 and 'by reflink' in done.stdout, done.stderr
    # What cron runs: the hooks around the run, and no output when all went well (cron mails output).
    done = subprocess.run([str(wrapper)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, '', '')
    assert (w / 'before-ran').exists() and (w / 'after-ran').read_text() == 'data success\n'
    listed = json.loads(subprocess.run(cli + ['list', 'data', '--json'], capture_output=True, text=True,
                                       check=True).stdout)
    assert len(listed) == 2
    assert (w / 'metrics' / 'fslinks_snapshot_data.prom').exists()

    gone = apply(w, [dict(job, state='absent')])
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (w / 'cron.d' / 'fslinks-snapshot-data').exists() and not wrapper.exists()
    assert not (w / 'etc' / 'data.json').exists()
    assert not (w / 'metrics' / 'fslinks_snapshot_data.prom').exists()
    assert [p['path'] for p in listed] == sorted(str(p) for p in (w / 'snaps').iterdir()
                                                 if p.is_dir() and not p.is_symlink())  # snapshots stay


@pytest.mark.parametrize('job, words', [
    ({'name': 'x', 'dest': '/srv/snaps'}, 'missing required arguments: src'),
    ({'name': 'x', 'src': '/srv', 'dest': '/srv/snaps', 'method': 'zfs'}, 'method'),
    ({'name': 'x', 'src': '/srv', 'dest': '/srv/snaps', 'keep': {'dayly': 3}}, 'dayly'),
    ({'name': 'x', 'src': '/srv', 'dest': '/srv/snaps', 'state': 'gone'}, 'state'),
])
def test_bad_variables_are_rejected_before_anything(tmp_path, job, words):
    proc = apply(tmp_path, [job])
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert 'Validating arguments against arg spec' in out and words in out, out
    assert not (tmp_path / 'etc').exists() and not (tmp_path / 'lib').exists()


TWO_PLAYS = '''
- hosts: localhost
  gather_facts: false
  roles:
    - role: fslinks.snapshots.snapshot_jobs
      snapshot_jobs: [{name: first, src: "%(src)s", dest: "%(base)s/snaps-first"}]
      snapshot_jobs_config_dir: "%(base)s/etc-first"

- hosts: localhost
  gather_facts: false
  roles:
    - role: fslinks.snapshots.snapshot_jobs
      snapshot_jobs: [{name: second, src: "%(src)s", dest: "%(base)s/snaps-second"}]
      snapshot_jobs_config_dir: "%(base)s/etc-second"
'''


def test_second_use_of_the_role_in_a_run_has_only_its_own_jobs(xfs, workdir):
    """Facts outlive their play: the second play must not deploy the first play's jobs."""
    w = workdir(xfs)
    (w / 'src').mkdir()
    for sub in ('bin', 'cron.d', 'units', 'etc-first', 'etc-second'):
        (w / sub).mkdir()
    extra = {
        'snapshot_jobs_scheduler': 'cron',
        'snapshot_jobs_install_dir': str(w / 'lib'),
        'snapshot_jobs_metrics_dir': str(w / 'metrics'),
        '__snapshot_jobs_cli': str(w / 'bin' / 'fslinks-snapshot'),
        '__snapshot_jobs_cron_dir': str(w / 'cron.d'),
        '__snapshot_jobs_unit_dir': str(w / 'units'),
    }
    proc = run_playbook(TWO_PLAYS % {'src': w / 'src', 'base': w}, extra_args=['-e', json.dumps(extra)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (w / 'etc-first').iterdir()) == ['first.json']
    assert sorted(p.name for p in (w / 'etc-second').iterdir()) == ['second.json']
    second = json.loads((w / 'etc-second' / 'second.json').read_text())
    assert second['workers'] == 0 and second['dest'] == str(w / 'snaps-second')
