# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scheduled snapshot jobs: the engine of the on-host CLI ``fslinks-snapshot``.

The role ``snapshot_jobs`` ships these very files to each host as the
package ``fslinks_snapshots`` and writes one JSON config per job; timers or
cron call ``fslinks-snapshot run JOB``, which does exactly what the
``hardlink_snapshot`` module does, then writes Prometheus textfile metrics.
Metrics and the log line of a successful run carry counts and the job name,
never file names; a failure names its path, escaped onto one line.
"""

import argparse
import datetime
import json
import os
import random
import re
import sys
import tempfile
import time

from . import _inspect, _options, _pull, _restore, _retention, _serve, _snapshot
from ._errors import BadInput, Busy, LinkError, at_door
from ._mounts import file_type
from ._tree import PRESERVE_ALL, display

CONFIG_DIR = '/etc/fslinks-snapshots'
JOB_NAME = _options.JOB_NAME
EX_OK, EX_FAIL, EX_STALE, EX_USAGE, EX_BUSY = 0, 1, 2, 64, 75   # 75: EX_TEMPFAIL, as lock holders
# run: published, but entries were skipped (on_error=skip), as restic's 3;
# check: the newest snapshot is fresh, but it skipped entries or the free space is below keep.min_free.
EX_WARN = 3
JOB_KEYS = _options.JOB_KEYS
METRIC = 'fslinks_snapshot_'


def validate_job(cfg):
    """Check a job config; return it with defaults filled.  Messages name
    the job and the key, since they end up in an Ansible task's output."""
    if not isinstance(cfg, dict):
        raise BadInput('job config must be a JSON object')
    name = _options.BY_NAME['name'].settle(cfg.get('name'))
    for key in cfg:
        if key not in JOB_KEYS:
            raise BadInput('job %s: unknown key %r (known: %s)' % (name, key, ', '.join(sorted(JOB_KEYS))))
    out = _options.settle(cfg, _options.JOB, 'job %s: ' % name)
    _check_canonical(out)
    return out


def load_job(name, config_dir=CONFIG_DIR):
    if not JOB_NAME.match(name or ''):
        raise BadInput('invalid job name %r' % (name,))
    return load_file(os.path.join(config_dir, name + '.json'))


def load_file(path):
    try:
        with open(path, 'r', encoding='utf-8') as handle:
            cfg = json.load(handle)
    except OSError as exc:
        raise BadInput('cannot read job config %s: %s' % (path, exc.strerror), path)
    except (ValueError, RecursionError) as exc:
        raise BadInput('job config %s is not valid JSON: %s' % (path, exc), path)
    return validate_job(cfg)


def _request(cfg):
    _check_canonical(cfg)
    return _snapshot.Request(cfg['src'], cfg['dest'], method=cfg['method'], keep=cfg['keep'],
                             exclude=cfg['exclude'], one_file_system=cfg['one_file_system'],
                             lock_timeout=cfg['lock_timeout'], create_dest=False, workers=cfg['workers'],
                             on_error=cfg['on_error'], root_tag='job %s' % cfg['name'], ssh_key=cfg['ssh_key'],
                             ssh_port=cfg['ssh_port'], ssh_known_hosts=cfg['ssh_known_hosts'], bwlimit=cfg['bwlimit'])


def _check_canonical(cfg):
    """Jobs run as root on paths that users may own parts of: a symlink on
    the way (planted, or there from the start) must not redirect a job."""
    for key in ('dest',) if _pull.remote_of(cfg['src']) else ('src', 'dest'):
        real = os.path.realpath(cfg[key])
        if real != os.path.normpath(cfg[key]):
            raise BadInput('job %s: %s %s resolves to %s (a symlink on the way); jobs take real paths'
                           % (cfg['name'], key, cfg[key], real), cfg[key])


def init_job(cfg):
    """Create the job's snapshot root; runs refuse a root that was not."""
    _snapshot.initialize(_request(cfg))


def run_job(cfg, state='present', now=None):
    """One run; metrics are written whatever happens (a failure too)."""
    started = time.time()
    try:
        result = _snapshot.run(_request(cfg), state=state, now=now)
    except Busy:
        raise               # the running job will write the metrics; this one did nothing
    except Exception as exc:    # any failure, typed or not, is reported; main() words it
        _report_run(cfg, None, started, exc)
        raise
    _report_run(cfg, result, started, None)
    return result


def _report_run(cfg, result, started, error):
    """Metrics and the root's note of the last run (for `check`) are a
    report: failing to write them must not fail the run."""
    try:
        write_metrics(cfg, result, started, time.time() - started, error)
    except OSError as exc:
        log('job %s: could not write metrics to %s: %s' % (cfg['name'], metrics_path(cfg), exc.strerror), error=True)
    note_last_run(cfg, started, error)


LAST_RUN = '.fslinks-last-run'      # DEST/.fslinks-last-run.json: how the last run ended


def note_last_run(cfg, started, error):
    """Write how the last run ended into the root, where `check` finds it
    (with or without metrics); nothing when the root itself is what failed."""
    try:
        fd = _snapshot.open_root(cfg['dest'], nofollow=True)
    except LinkError:
        return
    try:
        _snapshot.check_initialized(cfg['dest'], 'job %s' % cfg['name'])
        _snapshot.write_record(fd, LAST_RUN, {'started': _snapshot.iso_time(started), 'ok': error is None,
                                              'error': None if error is None else display(str(error))[:1000]})
    except (OSError, LinkError):
        pass
    finally:
        os.close(fd)


def last_run_failure(cfg, fd, newest):
    """A warning when the last run failed after the newest snapshot was made."""
    note = _snapshot.read_record(fd, LAST_RUN) or {}
    if note.get('ok') is not False:
        return None
    made = (newest or {}).get('created') or ''
    if made and str(note.get('started')) < made:
        return None         # an older failure: a snapshot was made since
    return 'job %s: the last run (started %s) failed: %s' % (cfg['name'], note.get('started'), note.get('error'))


def list_job(cfg, now=None):
    """Complete snapshots in the order they were made, with their creation
    time (from the record) and whether it is in the future; size on disk
    left out on purpose (du would read every inode)."""
    out = []
    # A job's root exists once initialized: missing, it is an unmounted disk, not an empty list.
    for snap in _inspect.describe(cfg['dest'], now=now)['snapshots']:
        if snap['complete']:
            out.append({'name': snap['name'], 'path': snap['path'], 'time': snap['created'],
                        'timestamp': int(_timestamp(_retention.created_time(snap['name'], snap))),
                        'future_dated': snap['future_dated']})
    return out


def _timestamp(when):
    return (when - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds()


def check_job(cfg, now=None):
    """(ok, message): is the newest complete snapshot young enough?"""
    now = now or time.time()
    try:
        snaps = list_job(cfg, now=now)
    except Busy:
        raise
    except LinkError as exc:        # no snapshot to be seen: as stale as none, and why
        return False, 'job %s: %s' % (cfg['name'], exc)
    if not snaps:
        return False, 'job %s: no complete snapshot in %s' % (cfg['name'], cfg['dest'])
    newest = snaps[-1]
    age = now - newest['timestamp']
    # Dated in the future, the newest tells nothing about how fresh the snapshots are.
    ok = not newest['future_dated'] and age <= cfg['max_age']
    if newest['future_dated']:
        message = 'job %s: newest snapshot %s is dated in the future (created %s): its age is unknown' % (
            cfg['name'], newest['name'], newest['time'])
    else:
        message = 'job %s: newest snapshot %s is %s old%s%s' % (
            cfg['name'], newest['name'], _human(age), '' if ok else ' (max_age %s)' % _human(cfg['max_age']),
            _space_words(cfg))
    return ok, '\n'.join([message] + future_warnings(cfg, snaps))


def future_warnings(cfg, snaps):
    """One warning line if any snapshot is dated in the future (list, check)."""
    future = [s for s in snaps if s['future_dated']]
    if not future:
        return []
    furthest = max(future, key=lambda s: s['timestamp'])
    return ['job %s: warning: %d snapshot(s) dated in the future, the furthest %s created %s: the clock was '
            'ahead when they were made, or went back since; each keeps a slot of the period rules until deleted'
            % (cfg['name'], len(future), furthest['name'], furthest['time'])]


def check_warnings(cfg):
    """What `check` warns of on a fresh chain: the last run failed (after
    the newest snapshot), entries the newest snapshot skipped (its record),
    free space below keep.min_free."""
    out = []
    try:
        fd = _snapshot.open_root(cfg['dest'], nofollow=True)
    except LinkError:
        return out          # check_job has said why already
    try:
        names = _snapshot.list_snapshots(fd)
        record = _snapshot.read_record(fd, names[-1]) if names else None
        failed = last_run_failure(cfg, fd, record)
        if failed:
            out.append(failed)
        skipped = ((record or {}).get('stats') or {}).get('skipped') or 0
        if skipped:
            out.append('job %s: snapshot %s skipped %d entries that could not be read or written (listed in %s)'
                       % (cfg['name'], names[-1], skipped, os.path.join(cfg['dest'], names[-1] + _snapshot.RECORD)))
        free, size = _snapshot.space_of(fd)
        floor = _snapshot.floor_of(cfg['keep'], size)
        if floor is not None and free < floor:
            out.append('job %s: %s has %s free, below keep.min_free %s (%s)'
                       % (cfg['name'], cfg['dest'], _size(free), cfg['keep']['min_free'], _size(floor)))
    finally:
        os.close(fd)
    return out


def _space_words(cfg):
    """'; 1.2G of 10.0G free' for the check line (nothing if statvfs fails)."""
    try:
        st = os.statvfs(cfg['dest'])
    except OSError:
        return ''
    return '; %s of %s free' % (_size(st.f_bavail * st.f_frsize), _size(st.f_blocks * st.f_frsize))


def _human(seconds):
    s = int(seconds)
    if s >= 86400:
        return '%dd%02dh' % (s // 86400, s % 86400 // 3600)
    if s >= 3600:
        return '%dh%02dm' % (s // 3600, s % 3600 // 60)
    if s >= 60:
        return '%dm%02ds' % (s // 60, s % 60)
    return '%ds' % s


# ---------------------------------------------------------------- metrics

def metrics_path(cfg):
    if not cfg.get('metrics_dir'):
        return None
    return os.path.join(cfg['metrics_dir'], 'fslinks_snapshot_%s.prom' % cfg['name'])


def _previous_success(path, job):
    """Keep last_success across failed runs: read it back from the file."""
    pattern = re.compile(r'^%slast_success_timestamp_seconds\{job="%s"\} (\S+)$' % (METRIC, re.escape(job)))
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), 'r', encoding='utf-8') as handle:
            for line in handle:
                found = pattern.match(line.strip())
                if found:
                    return float(found.group(1))
    except (OSError, ValueError):
        pass
    return 0.0


def render_metrics(job, result, started, duration, error, last_success, max_age=None):
    """Prometheus text exposition format (for node_exporter's textfile collector).
    ``max_age``: the job's, so that an alert can judge staleness per job."""
    stats = (result or {}).get('stats') or {}
    label = '{job="%s"}' % job
    rows = [
        ('last_run_timestamp_seconds', 'gauge', 'Start of the last run.', [(label, started)]),
        ('last_success_timestamp_seconds', 'gauge', 'Start of the last successful run.',
         [(label, started if error is None else last_success)]),
        ('last_run_status', 'gauge', '1 if the last run succeeded, 0 if it failed.',
         [(label, 0 if error else 1)]),
        ('last_run_duration_seconds', 'gauge', 'Duration of the last run.', [(label, duration)]),
        ('files', 'gauge', 'Files of the last snapshot, by how they were made.',
         [('{job="%s",how="%s"}' % (job, how), stats.get(how, 0)) for how in ('linked', 'reflinked', 'copied')]),
        ('bytes', 'gauge', 'Bytes of the last snapshot, by how they were made.',
         [('{job="%s",how="%s"}' % (job, how), stats.get('bytes_' + how, 0)) for how in ('linked', 'cloned', 'copied')]),
        ('snapshots_kept', 'gauge', 'Complete snapshots after the last run.',
         [(label, len((result or {}).get('kept') or []))]),
        ('future_dated', 'gauge', 'Snapshots created after the clock of the last run (ahead then, or back since).',
         [(label, len((result or {}).get('future_dated') or []))]),
        ('skipped_entries', 'gauge', 'Entries the last snapshot left out: unreadable or unwritable (on_error=skip).',
         [(label, stats.get('skipped', 0))]),
    ]
    changed = (result or {}).get('changed_files') or {}
    known = [how for how in ('added', 'modified', 'deleted') if changed.get(how) is not None]
    if known:       # only a snapshot compared with a previous one has them (alert on a mass change)
        rows.append(('changed_files', 'gauge', 'Regular files of the last snapshot against the previous one.',
                     [('{job="%s",how="%s"}' % (job, how), changed[how]) for how in known]))
    if max_age is not None:
        rows.append(('max_age_seconds', 'gauge', 'Age after which `check` calls the newest snapshot stale (the '
                     "job's max_age).", [(label, max_age)]))
    if result is not None:
        rows.append(('warnings', 'gauge', 'Warnings of the last run (files vanished during a pull, free space below '
                     'the floor, clock ahead...; the log has them).', [(label, len(result.get('warnings') or []))]))
    pulled = (result or {}).get('rsync') or {}
    if pulled:      # a pull: what came over the wire, and what rsync found already there
        rows.append(('pull_bytes', 'gauge', 'Bytes of the last pull: received over ssh, file data sent whole '
                     '(literal), file data found in the mirror or previous snapshot (matched).',
                     [('{job="%s",how="%s"}' % (job, how), pulled.get(key, 0)) for how, key in
                      (('received', 'received_bytes'), ('literal', 'literal_bytes'), ('matched', 'matched_bytes'))]))
    space = (result or {}).get('space') or {}
    if space.get('size_bytes') is not None:
        rows += [
            ('free_bytes', 'gauge', "Free bytes on the snapshot root's filesystem after the last run.",
             [(label, space['free_bytes'])]),
            ('size_bytes', 'gauge', "Size in bytes of the snapshot root's filesystem.", [(label, space['size_bytes'])]),
        ]
        if space.get('min_free_bytes') is not None:
            rows.append(('min_free_bytes', 'gauge', 'The free-space floor (keep.min_free) in bytes.',
                         [(label, space['min_free_bytes'])]))
    lines = []
    for name, kind, help_text, samples in rows:
        lines.append('# HELP %s%s %s' % (METRIC, name, help_text))
        lines.append('# TYPE %s%s %s' % (METRIC, name, kind))
        for labels, value in samples:
            lines.append('%s%s%s %s' % (METRIC, name, labels, _number(value)))
    return '\n'.join(lines) + '\n'


def _number(value):
    return repr(round(value, 3)) if isinstance(value, float) else str(int(value))


def _space_at(cfg):
    """The space part of a result, for a run that failed before it had one."""
    try:
        st = os.statvfs(cfg['dest'])
    except OSError:
        return {}
    size = st.f_blocks * st.f_frsize
    return {'free_bytes': st.f_bavail * st.f_frsize, 'size_bytes': size,
            'min_free_bytes': _snapshot.floor_of(cfg['keep'], size)}


def write_metrics(cfg, result, started, duration, error):
    """Atomic write (temp + rename): the collector never reads half a file."""
    path = metrics_path(cfg)
    if path is None:
        return
    if error is not None and result is None:
        try:
            snaps = list_job(cfg)
        except LinkError:
            snaps = []          # the root itself is what failed: the run's error says so
        result = {'kept': [s['path'] for s in snaps], 'future_dated': [s['path'] for s in snaps if s['future_dated']],
                  'space': _space_at(cfg)}
    text = render_metrics(cfg['name'], result, started, duration, error, _previous_success(path, cfg['name']),
                          cfg.get('max_age'))
    # mkstemp: O_EXCL, so a symlink planted at the temporary name is never followed.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(text)
            os.fchmod(handle.fileno(), 0o644)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- logging

def log(message, error=False):
    """To the journal when systemd runs us (stdout is captured), else also
    to syslog (cron mails or drops stdout)."""
    stream = sys.stderr if error else sys.stdout
    stream.write(message + '\n')
    stream.flush()
    if os.environ.get('JOURNAL_STREAM') or os.environ.get('INVOCATION_ID'):
        return
    try:
        import syslog
        syslog.openlog('fslinks-snapshot', 0, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_ERR if error else syslog.LOG_INFO, message)
    except (ImportError, OSError):
        pass


def summary(cfg, result):
    stats = result.get('stats') or {}
    changed = result.get('changed_files')
    since = '' if not changed else '; since the previous: %d added, %d modified, %s deleted' % (
        changed['added'], changed['modified'], '?' if changed['deleted'] is None else changed['deleted'])
    return ('job %s: snapshot %s by %s in %.2fs: %d files (%d linked, %d reflinked, %d copied, %d bytes copied)%s; '
            '%d kept, %d pruned' % (cfg['name'], os.path.basename(result.get('snapshot') or '-'),
                                    result.get('method') or '-', result.get('seconds') or 0,
                                    stats.get('files', 0), stats.get('linked', 0), stats.get('reflinked', 0),
                                    stats.get('copied', 0), stats.get('bytes_copied', 0), since,
                                    len(result.get('kept') or []), len(result.get('pruned') or []))
            + ('; %d skipped' % stats['skipped'] if stats.get('skipped') else ''))


# ---------------------------------------------------------------- CLI

def _parser():
    parser = argparse.ArgumentParser(
        prog='fslinks-snapshot',
        description='Run and inspect the snapshot jobs deployed by fslinks.snapshots.snapshot_jobs.')
    parser.add_argument('--config-dir', default=CONFIG_DIR, help='where JOB.json files live (%(default)s)')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    run = sub.add_parser('run', help='make a snapshot now, then prune (exit 3: published, but entries were skipped)')
    run.add_argument('job')
    run.add_argument('--random-delay', type=int, default=0, metavar='SECONDS',
                     help='first sleep a random time up to SECONDS (spreads a fleet started by cron)')
    lst = sub.add_parser('list', help='list the complete snapshots of a job')
    lst.add_argument('job')
    lst.add_argument('--json', action='store_true', help='JSON instead of a table')
    lst.add_argument('--usage', action='store_true', help='also the bytes only each snapshot holds (walks them all)')
    prune = sub.add_parser('prune', help='prune by the retention policy, make no snapshot')
    prune.add_argument('job')
    check = sub.add_parser('check', help='exit 2 when the newest snapshot is older than max_age (or none), 3 when '
                                         'it skipped entries or free space is below keep.min_free')
    check.add_argument('job')
    init = sub.add_parser('init', help="create the job's snapshot root (runs refuse a missing one: unmounted disk)")
    init.add_argument('job')
    du = sub.add_parser('du', help='disk usage: what each snapshot holds alone and shares (allocated bytes)')
    du.add_argument('job')
    du.add_argument('--json', action='store_true', help='one JSON document instead of a table')
    diff = sub.add_parser('diff', help='what changed between two snapshots, or a snapshot and live src')
    diff.add_argument('job')
    diff.add_argument('a', nargs='?', help='the older snapshot (default: the next to newest; "latest": the newest)')
    diff.add_argument('b', nargs='?', help='the newer one, or "live" for src (default: the newest; with A alone: live)')
    diff.add_argument('--json', action='store_true', help='one JSON document instead of rsync -i style lines')
    versions = sub.add_parser('versions', help='the distinct versions of one file or directory')
    versions.add_argument('job')
    versions.add_argument('path', help='relative to src (or an absolute path inside src)')
    versions.add_argument('--json', action='store_true', help='one JSON document instead of a table')
    serve = sub.add_parser('serve', help="on a client: the forced command of a backup server's ssh key; lets "
                                         "through only a read-only rsync of PATH (docs/pull.md)")
    serve.add_argument('path', help='the one tree the key may read')
    validate = sub.add_parser('validate', help='validate a job config file (used before deploying it)')
    validate.add_argument('file')
    failed = sub.add_parser('record-failure', help="record a failed run of a job in its metrics and the log "
                                                   "(the role's hooks: a before hook failed, so no run was made)")
    failed.add_argument('job')
    failed.add_argument('message')
    rst = sub.add_parser('restore', help='put a snapshot, or one path of it, back (into the live tree or under --to)')
    rst.add_argument('job')
    rst.add_argument('path', nargs='?', help="a path inside the tree, or an absolute path inside the job's src "
                                             "(default: the whole tree)")
    rst.add_argument('--snapshot', default=_restore.LATEST, metavar='NAME',
                     help='the snapshot to restore (default: latest, the newest that is not a guard snapshot)')
    rst.add_argument('--to', metavar='DIR', help="restore under DIR (PATH at its place below it), not into the job's src")
    rst.add_argument('--mirror', action='store_true',
                     help="make the target exactly the snapshot's content: delete what the snapshot lacks "
                          "(excluded paths are kept)")
    rst.add_argument('--dry-run', action='store_true', help='list what would change; change nothing')
    rst.add_argument('--no-guard', action='store_true',
                     help='take no guard snapshot of the live tree before changing it')
    rst.add_argument('--json', action='store_true', help='one JSON document instead of lines')
    return parser


def main(argv=None):
    """The CLI's door: whatever fails ends as one log line and an exit code,
    never a traceback."""
    args = _parser().parse_args(argv)
    where = [getattr(args, 'file', None) or getattr(args, 'path', None) if args.command in ('validate', 'serve')
             else os.path.join(args.config_dir, '%s.json' % args.job)]
    try:
        return _command(args, where)
    except Exception as exc:    # pylint: disable=broad-exception-caught
        err = at_door(exc, where[0], 'fslinks-snapshot %s' % args.command)
        log('fslinks-snapshot: %s' % display(str(err)), error=True)
        if isinstance(err, Busy):
            return EX_BUSY
        return EX_USAGE if isinstance(err, BadInput) and args.command not in ('run', 'serve') else EX_FAIL


def _command(args, where):
    """One command; ``where[0]`` is what a failure is about: the config
    until it is read, then the job's snapshot root."""
    if args.command == 'serve':
        _serve.serve(args.path)         # becomes rrsync, or raises
    if args.command == 'validate':
        cfg = load_file(args.file)
        _out('job %s: config OK' % cfg['name'])
        return EX_OK
    cfg = load_job(args.job, args.config_dir)
    where[0] = cfg['dest']
    if args.command == 'run':
        if args.random_delay > 0:
            time.sleep(random.uniform(0, args.random_delay))
        result = run_job(cfg)
        for warning in result.get('warnings', []):
            log('job %s: %s' % (cfg['name'], display(warning)), error=True)
        log(summary(cfg, result))
        if result['stats'].get('skipped'):
            return EX_WARN
    elif args.command == 'record-failure':
        # The run never started, so this is what tells the metrics (last_run_status 0).
        _report_run(cfg, None, time.time(), args.message)
        log('job %s: %s' % (cfg['name'], display(args.message)), error=True)
    elif args.command == 'init':
        init_job(cfg)
        _out('job %s: snapshot root %s ready' % (cfg['name'], cfg['dest']))
    elif args.command == 'prune':
        result = run_job(cfg, state='pruned')
        log('job %s: pruned %d, kept %d' % (cfg['name'], len(result['pruned']), len(result['kept'])))
    elif args.command in INSPECT_COMMANDS:
        return INSPECT_COMMANDS[args.command](cfg, args)
    elif args.command == 'check':
        ok, message = check_job(cfg)
        _out(message)
        warnings = check_warnings(cfg)
        for warning in warnings:
            _out('warning: ' + warning)
        if not ok:
            return EX_STALE
        return EX_WARN if warnings else EX_OK
    elif args.command == 'restore':
        result = restore_job(cfg, args.path, snapshot=args.snapshot, to=args.to, mirror=args.mirror,
                             guard=not args.no_guard, dry_run=args.dry_run,
                             report=None if args.json else _restore_line)
        _print_restore(cfg, result, args.json, args.dry_run)
    return EX_OK


def restore_job(cfg, path=None, **options):
    """_restore.restore for a job: its root, src, excludes and method (for
    the guard snapshot), and the same checks on the root as a run."""
    _check_canonical(cfg)
    job = {'src': cfg['src'], 'method': cfg['method'], 'exclude': cfg['exclude'],
           'one_file_system': cfg['one_file_system'], 'lock_timeout': cfg['lock_timeout'],
           'root_tag': 'job %s' % cfg['name']}
    return _restore.restore(cfg['dest'], path=path, job=job, **options)


# What Meta.differs names, as rsync -i's letters
_DIFFERS_LETTER = {'type': 'c', 'size': 's', 'mtime': 't', 'mode': 'p', 'owner': 'og', 'xattrs': 'x'}


def _restore_line(path, action, src_meta, dest_meta):
    """A restore's report, one rsync -i line per change as the walk makes
    (or plans) it."""
    path = os.fsdecode(path) or '.'
    meta = src_meta or dest_meta
    typ = file_type(meta.mode) if meta is not None else 'file'
    if action == 'delete':
        kind, letters = 'deleted', ''
    elif dest_meta is None:
        kind, letters = 'added', ''
    else:
        kind = 'metadata' if action == 'metadata' else 'modified'
        letters = ''.join(_DIFFERS_LETTER[d] for d in src_meta.differs(dest_meta, PRESERVE_ALL))
    _out(display(_itemize(kind, path, typ, letters)))


def _print_restore(cfg, result, as_json, dry_run):
    if as_json:
        _out(json.dumps(result, indent=2, sort_keys=True))
        return
    what = result['path'] or 'the whole tree'
    if not result['changed']:
        _out('job %s: %s already matches snapshot %s: nothing to restore'
             % (cfg['name'], result['target'], result['snapshot']))
        return
    verb = 'would restore' if dry_run else 'restored'
    line = 'job %s: %s %s from snapshot %s to %s: %d changed, %d deleted' % (
        cfg['name'], verb, what, result['snapshot'], result['target'], result['restored'], result['deleted'])
    if not dry_run:
        line += ' (by %s)' % result['method']
        if result['guard_snapshot']:
            line += '; the live tree as it was is snapshot %s' % os.path.basename(result['guard_snapshot'])
    _out(line)


def _out(text):
    sys.stdout.write(text + '\n')


# ---------------------------------------------------------------- inspection

def _live(cfg):
    """The live tree, when it is on this host."""
    return None if _pull.remote_of(cfg['src']) or not os.path.isdir(cfg['src']) else cfg['src']


def _cmd_list(cfg, args):
    """list: from each record the method and file count, optionally usage."""
    # A job's root exists once initialized: missing, it is an unmounted disk (an error), not an empty list.
    info = _inspect.describe(cfg['dest'], with_usage=args.usage, live=_live(cfg),
                             excluder=_snapshot.Excluder(cfg['exclude']))
    snaps = [s for s in info['snapshots'] if s['complete']]
    for snap in snaps:
        del snap['complete']
        when = _retention.created_time(snap['name'], snap)
        snap['time'], snap['timestamp'] = snap['created'], int(_timestamp(when))
    for line in future_warnings(cfg, snaps):
        sys.stderr.write(line + '\n')      # not on stdout: the table (or JSON) stays machine-readable
    if args.json:
        _out(json.dumps(snaps, indent=2))
        return EX_OK
    extra = '  %10s %10s' % ('EXCLUSIVE', 'SHARED') if args.usage else ''
    _out('%-24s %-20s %-8s %8s%s  %s' % ('NAME', 'TIME (UTC)', 'METHOD', 'FILES', extra, 'PATH'))
    for snap in snaps:
        extra = '  %10s %10s' % (_size(snap['exclusive_bytes']), _size(snap['shared_bytes'])) if args.usage else ''
        files = '-' if snap['files'] is None else str(snap['files'])
        _out('%-24s %-20s %-8s %8s%s  %s'
             % (snap['name'], snap['created'], snap['method'] or '-', files, extra, snap['path']))
    return EX_OK


def _size(count):
    """1536 -> 1.5K (powers of 1024, as du -h)."""
    value = float(count)
    for unit in ('B', 'K', 'M', 'G', 'T'):
        if value < 1024 or unit == 'T':
            return '%d%s' % (value, unit) if unit == 'B' else '%.1f%s' % (value, unit)
        value /= 1024
    return str(count)


def _cmd_du(cfg, args):
    """du: exclusive and shared allocated bytes of each snapshot."""
    live = _live(cfg)
    use = _inspect.usage(cfg['dest'], live=live, excluder=_snapshot.Excluder(cfg['exclude']))
    use['job'] = cfg['name']
    if args.json:
        _out(json.dumps(use, indent=2))
        return EX_OK
    _out('%-24s %-8s %12s %12s' % ('NAME', 'METHOD', 'EXCLUSIVE', 'SHARED'))
    for snap in use['snapshots']:
        _out('%-24s %-8s %12s %12s%s' % (snap['name'], snap['method'] or '-', _size(snap['exclusive_bytes']),
                                         _size(snap['shared_bytes']), '  (estimate)' if snap['estimate'] else ''))
    _out('job %s: %d snapshots, %s on disk, %s freed by deleting them all (allocated bytes of file data; '
         'data still in src %s counts as shared)' % (cfg['name'], len(use['snapshots']), _size(use['total_bytes']),
                                                     _size(use['chain_exclusive_bytes']), live or '(missing)'))
    for reason in use.get('reasons', []):
        _out('estimate: %s' % reason)
    return EX_OK


def _pick(cfg, names, which):
    """A snapshot name, "latest" or "live" -> (label, path)."""
    if which == _inspect.LIVE:
        if _pull.remote_of(cfg['src']):
            raise BadInput('job %s: its live tree is on another host (%s): compare snapshots here, or diff on '
                           'the client' % (cfg['name'], cfg['src']), cfg['dest'])
        return which, cfg['src']
    if which == _snapshot.LATEST and names:
        which = names[-1]
    if which not in names:
        known = '%d snapshots, %s to %s' % (len(names), names[0], names[-1]) if names else 'no snapshots'
        raise BadInput('job %s: no snapshot %r in %s (%s)' % (cfg['name'], which, cfg['dest'], known), cfg['dest'])
    return which, os.path.join(cfg['dest'], which)


_TYPE_LETTER = {'file': 'f', 'directory': 'd', 'link': 'L', 'char': 'D', 'block': 'D', 'fifo': 'S', 'socket': 'S'}


def _itemize(kind, path, typ, letters):
    """One line in the manner of rsync --itemize-changes."""
    shown = path + '/' if typ == 'directory' and path != '.' else path
    if path == '.':
        shown = './'
    if kind == 'deleted':
        return '*deleting   ' + shown
    letter = _TYPE_LETTER.get(typ, 'S')
    if kind == 'added':
        return '%s%s+++++++++ %s' % ('>' if letter == 'f' else 'c', letter, shown)
    flags = ['.'] * 9
    for pos, code in enumerate('cstpoguax'):
        if code in letters:
            flags[pos] = code
    first = '.' if kind == 'metadata' else ('>' if letter == 'f' else 'c')
    return '%s%s%s %s' % (first, letter, ''.join(flags), shown)


def _cmd_diff(cfg, args):
    """diff: what changed from A to B (default: the two newest)."""
    names = _snapshot.list_snapshots_at(cfg['dest'])
    if args.a is None:
        if len(names) < 2:
            raise BadInput('job %s: diff needs two snapshots, %s has %d (or name one: diff %s NAME live)'
                           % (cfg['name'], cfg['dest'], len(names), cfg['name']), cfg['dest'])
        a, b = names[-2], names[-1]
    else:
        a, b = args.a, args.b or _inspect.LIVE
    (a, path_a), (b, path_b) = _pick(cfg, names, a), _pick(cfg, names, b)
    exclude = _snapshot.Excluder(cfg['exclude'])
    found = _inspect.diff(path_a, path_b, excluder_a=exclude if a == _inspect.LIVE else None,
                          excluder_b=exclude if b == _inspect.LIVE else None)
    if args.json:
        found.update(job=cfg['name'], a=a, b=b, a_path=path_a, b_path=path_b)
        _out(json.dumps(found, indent=2))
        return EX_OK
    items = []
    for kind in ('deleted', 'added', 'modified', 'metadata'):
        for path in found[kind]:
            items.append((path, kind != 'deleted', kind))
    for path, _order, kind in sorted(items):
        _out(_inspect.display(_itemize(kind, path, found['types'][path], found['changes'].get(path, ()))))
    _out('job %s: %s -> %s: %d added, %d deleted, %d modified, %d metadata only'
         % (cfg['name'], a, b, len(found['added']), len(found['deleted']), len(found['modified']),
            len(found['metadata'])))
    return EX_OK


def _cmd_versions(cfg, args):
    """versions: the distinct versions of one path, oldest first."""
    found = _inspect.versions(cfg['dest'], args.path, live=_live(cfg))
    if not found:
        raise BadInput('job %s: %s is in no snapshot of %s and not in src %s'
                       % (cfg['name'], _inspect.display(args.path), cfg['dest'], cfg['src']), args.path)
    if args.json:
        _out(json.dumps({'job': cfg['name'], 'path': args.path, 'versions': found}, indent=2))
        return EX_OK
    _out('%-24s %-9s %12s  %-31s %s' % ('SNAPSHOT', 'TYPE', 'SIZE', 'MTIME (UTC)', 'SAME IN'))
    for version in found:
        also = version['snapshots'][1:]
        _out('%-24s %-9s %12d  %-31s %s' % (version['snapshot'], version['type'], version['size'], version['mtime'],
                                            ('%d more, to %s' % (len(also), also[-1])) if also else '-'))
    return EX_OK


INSPECT_COMMANDS = {'list': _cmd_list, 'du': _cmd_du, 'diff': _cmd_diff, 'versions': _cmd_versions}
