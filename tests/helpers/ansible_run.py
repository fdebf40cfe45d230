# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run ansible / ansible-playbook against localhost from tests and get results back: one module
(run_adhoc), a playbook (run_playbook), or many tasks in one ansible-playbook process (run_tasks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import COLLECTIONS, TESTS

# Our stdout callback writes one JSON line per task result to FSLINKS_TEST_RESULT_FILE.
_RESULT_CALLBACK = {
    'ANSIBLE_LOAD_CALLBACK_PLUGINS': '1',
    'ANSIBLE_CALLBACK_PLUGINS': str(TESTS / 'callback_plugins'),
    'ANSIBLE_STDOUT_CALLBACK': 'fslinks_test_result',
}


class AnsibleRunError(RuntimeError):
    """ansible ran but produced no task result (bad arguments, unknown module, crash...)."""

    def __init__(self, msg, proc):
        super().__init__('%s (rc=%s)\nstdout:\n%s\nstderr:\n%s' % (msg, proc.returncode, proc.stdout, proc.stderr))
        self.proc = proc


def ansible_env(**extra):
    """Environment for running ansible commands: our collection path, no color, no chatter."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_NOCOLOR='1',
        ANSIBLE_FORCE_COLOR='0',
        ANSIBLE_LOCALHOST_WARNING='False',
        ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
        ANSIBLE_RETRY_FILES_ENABLED='False',
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _bin(name):
    # Prefer the tool next to the running interpreter (the .venv), then PATH.
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else (shutil.which(name) or name)


def run_adhoc(module, args=None, check=False, diff=False, extra_args=(), env=None, timeout=600):
    """Run MODULE on localhost (connection local) and return its result dict.

    MODULE is a short name of this collection (``reflink_copy``) or any FQCN
    (``ansible.builtin.stat``). ARGS is a dict (sent as JSON) or a string. The result is the
    module's whole result, ``diff`` included; a failure is a result with ``failed: true``.
    Raises AnsibleRunError if ansible produced no result at all.
    """
    fqcn = module if '.' in module else 'fslinks.snapshots.' + module
    with tempfile.NamedTemporaryFile('r', prefix='fslinks-adhoc-', suffix='.jsonl') as out:
        argv = [_bin('ansible'), 'localhost', '-c', 'local', '-m', fqcn,
                '-e', 'ansible_python_interpreter=%s' % sys.executable]
        if args:  # (an empty '{}' would be taken as raw params)
            argv += ['-a', args if isinstance(args, str) else json.dumps(args)]
        if check:
            argv.append('--check')
        if diff:
            argv.append('--diff')
        argv += list(extra_args)
        run_env = ansible_env(FSLINKS_TEST_RESULT_FILE=out.name, **_RESULT_CALLBACK)
        run_env.update(env or {})
        proc = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=timeout, check=False)
        lines = [json.loads(line) for line in out.read().splitlines() if line.strip()]
    if not lines:
        raise AnsibleRunError('ansible %s gave no result' % fqcn, proc)
    result = lines[-1]['result']
    result.setdefault('failed', lines[-1]['status'] in ('FAILED', 'UNREACHABLE'))
    return result


def run_playbook(playbook, extra_args=(), env=None, check=False, timeout=900):
    """Run a playbook (a path, or YAML text) with ansible-playbook; return the CompletedProcess.

    The localhost interpreter is this test's Python; callers check ``returncode`` themselves.
    """
    with tempfile.TemporaryDirectory(prefix='fslinks-play-') as tmp:
        path = Path(playbook) if '\n' not in str(playbook) and Path(playbook).exists() else None
        if path is None:
            path = Path(tmp) / 'playbook.yml'
            path.write_text(str(playbook), encoding='utf-8')
        argv = [_bin('ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                '-e', 'ansible_python_interpreter=%s' % sys.executable, str(path)]
        if check:
            argv.append('--check')
        argv += list(extra_args)
        run_env = ansible_env()
        run_env.update(env or {})
        return subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=timeout, check=False)


def run_tasks(tasks, check=False, timeout=600):
    """Run TASKS (a list of task dicts) in one ansible-playbook process on localhost and
    return one (status, result) per task run, in order.  JSON is YAML, so the playbook is
    written as JSON."""
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]
    with tempfile.NamedTemporaryFile('r', prefix='fslinks-batch-', suffix='.jsonl') as out:
        proc = run_playbook(json.dumps(play, indent=1) + '\n', check=check, timeout=timeout,
                            env=dict(_RESULT_CALLBACK, FSLINKS_TEST_RESULT_FILE=out.name))
        lines = [json.loads(line) for line in out.read().splitlines() if line.strip()]
    if not lines:
        raise AnsibleRunError('ansible-playbook gave no result', proc)
    return [(line['status'], line['result']) for line in lines]
