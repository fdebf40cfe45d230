# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine and the fslinks-snapshot CLI in child processes: to kill them, race them, or run
them as another user.

start_engine(src, dest, ...)   _snapshot.run() in a child, returned once it is about to run
engine_as_nobody(src, dest)    _reflink_copy.reflink_copy() as an unprivileged user
cli(config_dir, *args)         the CLI to the end; cli_start() to release many at one moment
Job(work, src, dest, ...)      a job config in its own config dir, with the CLI's verbs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from . import COLLECTIONS
from .prereq import need

EX_OK, EX_FAIL, EX_BUSY = 0, 1, 75    # the CLI's exit codes: done, failed, another run holds the lock

# ---------------------------------------------------------------- the engine

# The engine in a child process: prints "go" right before run(), then the result.
RUNNER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run
args = json.loads(sys.argv[2])
req = Request(args.pop('src'), args.pop('dest'), **args)
print('go', flush=True)
result = run(req)
print(json.dumps(result), flush=True)
'''


def start_engine(src, dest, **kw):
    """Start run() in a child process; returns the Popen once the child is about to run."""
    args = dict(src=str(src), dest=str(dest), **kw)
    proc = subprocess.Popen([sys.executable, '-c', RUNNER, str(COLLECTIONS), json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line == b'go\n', (line, proc.stderr.read())
    return proc


_NOBODY_SCRIPT = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.fslinks.snapshots.plugins.module_utils import _errors, _reflink_copy
try:
    res = _reflink_copy.reflink_copy(sys.argv[2], sys.argv[3])
    print(json.dumps({'ok': True, 'result': {k: v for k, v in res.items() if k != 'stats'}}))
except BaseException as e:
    print(json.dumps({'ok': False, 'cls': type(e).__name__,
                      'link_error': isinstance(e, _errors.LinkError), 'msg': str(e),
                      'path': getattr(e, 'path', None), 'errno': getattr(e, 'errno', None)}))
'''


def engine_as_nobody(src, dest, uid=65534, gid=65534):
    """Run the engine's reflink_copy(src, dest) as an unprivileged user; returns a dict
    {ok, result} or {ok: False, cls, link_error, msg, path, errno}."""
    need('setpriv')  # util-linux
    proc = subprocess.run(
        ['setpriv', '--reuid=%d' % uid, '--regid=%d' % gid, '--clear-groups', '--inh-caps=-all',
         sys.executable, '-c', _NOBODY_SCRIPT, str(COLLECTIONS), str(src), str(dest)],
        capture_output=True, text=True, check=False, cwd='/')
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the CLI

# The real CLI entry point (what the role's /usr/local/bin/fslinks-snapshot runs), with two
# test hooks: "ready" on stdout once imported, then wait for FSLINKS_GO_FILE to exist, so
# that many processes can be released at the same moment.
_CLI_CODE = r'''
import os, sys, time
sys.path.insert(0, %r)
from ansible_collections.fslinks.snapshots.plugins.module_utils._jobs import main
go = os.environ.get('FSLINKS_GO_FILE')
if go:
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    while not os.path.exists(go):
        time.sleep(0.0005)
sys.exit(main())
''' % str(COLLECTIONS)


def cli_argv(config_dir, *args):
    return [sys.executable, '-c', _CLI_CODE, '--config-dir', str(config_dir)] + [str(a) for a in args]


def cli(config_dir, *args, timeout=300, env=None):
    """Run `fslinks-snapshot --config-dir CONFIG_DIR ARGS...` to the end."""
    run_env = dict(os.environ)
    run_env.pop('FSLINKS_GO_FILE', None)
    run_env.update(env or {})
    return subprocess.run(cli_argv(config_dir, *args), capture_output=True, text=True, timeout=timeout,
                          check=False, env=run_env)


def cli_start(config_dir, *args, go_file=None):
    """Start the CLI; with GO_FILE it imports, says ready, and waits for the file to exist."""
    env = dict(os.environ)
    env.pop('FSLINKS_GO_FILE', None)
    if go_file:
        env['FSLINKS_GO_FILE'] = str(go_file)
    return subprocess.Popen(cli_argv(config_dir, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


class Job:
    """A job config in its own config dir (what the role deploys), for the CLI."""

    def __init__(self, work, src, dest, name='data', init=True, **cfg):
        self.work = Path(work)
        self.src, self.dest, self.name = Path(src), Path(dest), name
        self.etc = self.work / 'etc'
        self.metrics = self.work / 'metrics'
        self.etc.mkdir(exist_ok=True)
        self.metrics.mkdir(exist_ok=True)
        self.cfg = dict(name=name, src=str(src), dest=str(dest), metrics_dir=str(self.metrics))
        self.cfg.update(cfg)
        self.write()
        if init:
            self.init()

    def init(self):
        """`fslinks-snapshot init JOB`: create the root (the role does it when it deploys)."""
        done = cli(self.etc, 'init', self.name)
        assert done.returncode == 0, done.stderr

    def write(self):
        (self.etc / (self.name + '.json')).write_text(json.dumps(self.cfg))

    def run(self, *extra, **kw):
        return cli(self.etc, 'run', self.name, *extra, **kw)

    def start(self, go_file=None):
        return cli_start(self.etc, 'run', self.name, go_file=go_file)

    def listed(self):
        out = cli(self.etc, 'list', self.name, '--json')
        assert out.returncode == 0, out.stderr
        return [s['name'] for s in json.loads(out.stdout)]

    def metric(self, key):
        path = self.metrics / ('fslinks_snapshot_%s.prom' % self.name)
        for line in path.read_text().splitlines():
            if line.startswith('fslinks_snapshot_' + key + '{'):
                return float(line.rsplit(' ', 1)[1])
        return None
