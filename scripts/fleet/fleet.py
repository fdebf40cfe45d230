# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of scripts/fleet.sh (the fleet-scale run of the snapshot_jobs role).

  fleet.py populate DIR HOST              a few hundred small files (and one 256 KiB file) in DIR
  fleet.py measure --name N --out DIR -- COMMAND...
                                          run COMMAND under /usr/bin/time -v, sample the memory
                                          of its process tree, write DIR/N.json; exit as COMMAND
  fleet.py recap LOG HOSTS [--no-changes] check a playbook's PLAY RECAP: every host, no failure
  fleet.py verify --hosts hosts.json --disks DISKS --trigger-log LOG
                                          one snapshot per host, by the method its filesystem
                                          allows, equal to its source
  fleet.py render --out DIR --doc FILE    docs/fleet.md from the measurements in DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

METHOD = {'ext4': 'hardlink', 'xfs': 'reflink', 'btrfs': 'btrfs'}
DIRS = 10
FILES_PER_DIR = 30


# --------------------------------------------------------------------------- populate

def populate(args):
    """DIRS x FILES_PER_DIR small files (100 B to ~4 KiB, different per host) and blob.bin."""
    seed = sum(args.host.encode())
    for d in range(DIRS):
        sub = os.path.join(args.dir, 'd%02d' % d)
        os.makedirs(sub, exist_ok=True)
        for f in range(FILES_PER_DIR):
            size = 100 + (seed * 7919 + d * 104729 + f * 1299709) % 4000
            line = ('%s d%02d/f%03d ' % (args.host, d, f)).encode()
            with open(os.path.join(sub, 'f%03d.txt' % f), 'wb') as handle:
                handle.write((line * (size // len(line) + 1))[:size])
    with open(os.path.join(args.dir, 'blob.bin'), 'wb') as handle:
        handle.write(os.urandom(256 * 1024))
    return 0


# --------------------------------------------------------------------------- measure

def _children_map():
    """{ppid: [pid, ...]} of every process now."""
    kids = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry, 'rb') as handle:
                stat = handle.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: the fields follow the last ')'.
        ppid = int(stat[stat.rindex(b')') + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root):
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def _mem_kb(pid):
    """(Rss, Pss) in KiB of one process, or None if it is gone."""
    rss = pss = None
    try:
        with open('/proc/%d/smaps_rollup' % pid) as handle:
            for line in handle:
                if line.startswith('Rss:'):
                    rss = int(line.split()[1])
                elif line.startswith('Pss:'):
                    pss = int(line.split()[1])
    except OSError:
        return None
    if rss is None or pss is None:   # a zombie or a kernel thread
        return None
    return rss, pss


def _comm(pid):
    try:
        with open('/proc/%d/comm' % pid) as handle:
            return handle.read().strip()
    except OSError:
        return '?'


def _parse_time_v(path):
    """Maximum resident set size (KiB) and elapsed seconds from GNU time -v output."""
    maxrss = elapsed = None
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line.startswith('Maximum resident set size (kbytes):'):
                maxrss = int(line.rsplit(':', 1)[1])
            elif line.startswith('Elapsed (wall clock) time'):
                value = line.split('):', 1)[1].strip()
                secs = 0.0
                for part in value.split(':'):
                    secs = secs * 60 + float(part)
                elapsed = secs
    return maxrss, elapsed


def measure(args):
    os.makedirs(args.out, exist_ok=True)
    timefile = os.path.join(args.out, args.name + '.time')
    log = open(os.path.join(args.out, args.name + '.log'), 'wb')
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    start = time.monotonic()
    proc = subprocess.Popen(['/usr/bin/time', '-v', '-o', timefile] + command, stdout=log, stderr=subprocess.STDOUT)
    main_pid = None
    main_peak = 0
    tree_rss_peak = tree_pss_peak = procs_peak = 0
    by_comm_peak = {}
    samples = 0
    while proc.poll() is None:
        pids = _tree(proc.pid)
        if main_pid is None and len(pids) > 1:
            # The first child of time: the ansible / ansible-playbook process itself.
            main_pid = min(p for p in pids if p != proc.pid)
        rss_sum = pss_sum = count = 0
        comms = {}
        for pid in pids:
            if pid == proc.pid:
                continue          # /usr/bin/time itself is not the controller
            mem = _mem_kb(pid)
            if mem is None:
                continue
            count += 1
            rss_sum += mem[0]
            pss_sum += mem[1]
            if pid == main_pid:
                main_peak = max(main_peak, mem[0])
            name = _comm(pid)
            comms[name] = comms.get(name, 0) + 1
        samples += 1
        tree_rss_peak = max(tree_rss_peak, rss_sum)
        tree_pss_peak = max(tree_pss_peak, pss_sum)
        procs_peak = max(procs_peak, count)
        for name, n in comms.items():
            by_comm_peak[name] = max(by_comm_peak.get(name, 0), n)
        time.sleep(args.interval)
    wall = time.monotonic() - start
    log.close()
    maxrss, elapsed = _parse_time_v(timefile)
    result = {
        'name': args.name, 'command': command, 'rc': proc.returncode, 'wall_s': round(wall, 2),
        'time_elapsed_s': elapsed, 'time_maxrss_kb': maxrss, 'main_peak_rss_kb': main_peak,
        'tree_peak_rss_kb': tree_rss_peak, 'tree_peak_pss_kb': tree_pss_peak,
        'tree_peak_procs': procs_peak, 'tree_peak_by_command': by_comm_peak,
        'samples': samples, 'interval_s': args.interval,
    }
    with open(os.path.join(args.out, args.name + '.json'), 'w') as handle:
        json.dump(result, handle, indent=2)
    print('fleet: %-12s %6.1f s  exit %d  max RSS %s KiB' % (args.name, wall, proc.returncode, maxrss))
    # The measured command's exit status; >128 for a signal, as a shell would say.
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


# --------------------------------------------------------------------------- recap

RECAP = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)')


def recap(args):
    with open(args.hosts) as handle:
        names = {h['name'] for h in json.load(handle)}
    seen = {}
    in_recap = False
    with open(args.log) as handle:
        for line in handle:
            if line.startswith('PLAY RECAP'):
                in_recap = True
                continue
            match = RECAP.match(line) if in_recap else None
            if match:
                seen[match.group(1)] = tuple(int(g) for g in match.groups()[1:])
    problems = []
    for name in sorted(names):
        if name not in seen:
            problems.append('%s: not in the PLAY RECAP' % name)
            continue
        _ok, changed, unreachable, failed = seen[name]
        if unreachable or failed:
            problems.append('%s: unreachable=%d failed=%d' % (name, unreachable, failed))
        if args.no_changes and changed:
            problems.append('%s: changed=%d on a re-converge (not idempotent)' % (name, changed))
    for problem in problems:
        print('fleet: %s' % problem, file=sys.stderr)
    changed_total = sum(v[1] for k, v in seen.items() if k in names)
    print('fleet: %s: %d hosts, %d changes in all%s'
          % (os.path.basename(args.log), len(names), changed_total, ', PROBLEMS' if problems else ''))
    return 1 if problems else 0


# --------------------------------------------------------------------------- verify

def _snapshot_dirs(root):
    return sorted(e for e in os.listdir(root)
                  if not e.startswith('.') and e != 'latest' and os.path.isdir(os.path.join(root, e)))


def _same_tree(a, b):
    """None if the trees under a and b hold the same names and bytes, else the first difference."""
    for top, dirs, files in os.walk(a):
        rel = os.path.relpath(top, a)
        other = os.path.normpath(os.path.join(b, rel))
        if sorted(os.listdir(top)) != sorted(os.listdir(other)):
            return 'entries differ in %s' % rel
        for name in files:
            with open(os.path.join(top, name), 'rb') as x, open(os.path.join(other, name), 'rb') as y:
                if x.read() != y.read():
                    return 'content differs: %s' % os.path.join(rel, name)
        dirs.sort()
    return None


def verify(args):
    with open(args.hosts) as handle:
        hosts = json.load(handle)
    # `ansible -o` lines: "NAME | CHANGED | rc=0 | (stdout) job data: snapshot X by METHOD in ..."
    lines = {}
    with open(args.trigger_log, errors='replace') as handle:
        for line in handle:
            parts = line.split(' | ', 1)
            if len(parts) == 2:
                lines[parts[0].strip()] = parts[1]
    problems = []
    methods = {}
    for host in hosts:
        name, fs = host['name'], host['fs']
        data = os.path.join(args.disks, fs, host['data'])
        line = lines.get(name, '')
        match = re.search(r'job data: snapshot (\S+) by (\S+) in', line)
        if not line.startswith('CHANGED | rc=0 |') or not match:
            problems.append('%s: the triggered run did not report a snapshot: %s' % (name, line.strip() or 'no output'))
            continue
        snap_name, method = match.groups()
        methods.setdefault(fs, set()).add(method)
        if method != METHOD[fs]:
            problems.append('%s: snapshot by %s on %s, expected %s' % (name, method, fs, METHOD[fs]))
        root = os.path.join(data, 'snapshots')
        snaps = _snapshot_dirs(root)
        if snaps != [snap_name]:
            problems.append('%s: snapshots on disk %s, expected [%s]' % (name, snaps, snap_name))
            continue
        snap = os.path.join(root, snap_name)
        if os.path.realpath(os.path.join(root, 'latest')) != os.path.realpath(snap):
            problems.append('%s: latest does not point at %s' % (name, snap_name))
        diff = _same_tree(os.path.join(data, 'src'), snap)
        if diff:
            problems.append('%s: snapshot differs from src: %s' % (name, diff))
        blob = os.path.join(snap, 'blob.bin')
        if fs == 'btrfs' and os.stat(snap).st_ino != 256:
            problems.append('%s: %s is not a btrfs subvolume' % (name, snap))
        if fs == 'xfs':
            out = subprocess.run(['filefrag', '-v', blob], capture_output=True, text=True, check=False).stdout
            if 'shared' not in out:
                problems.append('%s: %s shares no extent (no reflink)' % (name, blob))
        if fs == 'ext4' and os.stat(blob).st_ino == os.stat(os.path.join(data, 'src', 'blob.bin')).st_ino:
            problems.append('%s: the snapshot is the source itself' % name)
    for problem in problems:
        print('fleet: %s' % problem, file=sys.stderr)
    with open(os.path.join(args.out, 'verify.json'), 'w') as handle:
        json.dump({'hosts': len(hosts), 'problems': problems,
                   'methods': {fs: sorted(m) for fs, m in methods.items()}}, handle, indent=2)
    print('fleet: verified %d hosts: %s' % (len(hosts), 'OK' if not problems else '%d PROBLEMS' % len(problems)))
    return 1 if problems else 0


# --------------------------------------------------------------------------- render

def _recap_summary(log):
    """'ok=A-B changed=C-D skipped=E-F' over the hosts of a PLAY RECAP (ranges when they differ)."""
    rows = []
    with open(log) as handle:
        in_recap = False
        for line in handle:
            if line.startswith('PLAY RECAP'):
                in_recap = True
            elif in_recap:
                match = re.match(r'^\S+\s+:\s+ok=(\d+)\s+changed=(\d+).*?skipped=(\d+)', line)
                if match:
                    rows.append([int(g) for g in match.groups()])
    if not rows:
        return '?'
    parts = []
    for i, key in enumerate(('ok', 'changed', 'skipped')):
        lo, hi = min(r[i] for r in rows), max(r[i] for r in rows)
        parts.append('%s=%s' % (key, lo if lo == hi else '%d-%d' % (lo, hi)))
    return ' '.join(parts)


def _mib(kb):
    return '%.0f' % (kb / 1024.0) if kb else '-'


def render(args):
    def load(name):
        with open(os.path.join(args.out, name + '.json')) as handle:
            return json.load(handle)

    meta = load('meta')
    steps = [('ping', '`ansible all -m ping`'),
             ('converge', 'role converge (first run)'),
             ('reconverge', 'role re-converge (changed=0)'),
             ('trigger', '`fslinks-snapshot run data` on every host (`-m command`)')]
    res = {name: load(name) for name, _label in steps}
    create = load('create')
    verified = load('verify')
    ping = res['ping']['wall_s']
    hosts, forks = meta['hosts'], meta['forks']

    out = []
    out.append('# Fleet scale')
    out.append('')
    out.append('<!-- Generated by scripts/fleet.sh (make fleet) on %s; do not edit by hand. -->' % meta['date'])
    out.append('')
    out.append('The role `fslinks.snapshots.snapshot_jobs` on %d containers at once, driven from one controller '
               'with `-f %d` and pipelining, against a bare `ansible -m ping` of the same hosts. '
               'Each host has one job (`src=/data/src`: %d small files and one 256 KiB file; '
               '`dest=/data/snapshots`); after the converge every host gets one snapshot through '
               '`ansible.builtin.command`, and each is checked on disk (method, content, `latest`).'
               % (hosts, forks, meta['files_per_host'], ))
    out.append('')
    out.append('| hosts | forks | ping s | converge s | re-converge s | snapshot run s '
               '| converge / ping | re-converge / ping | run / ping | controller peak RSS MiB (largest process) |')
    out.append('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    peak = max(res[n]['time_maxrss_kb'] or 0 for n, _label in steps)
    out.append('| %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %s |' % (
        hosts, forks, ping, res['converge']['wall_s'], res['reconverge']['wall_s'], res['trigger']['wall_s'],
        res['converge']['wall_s'] / ping, res['reconverge']['wall_s'] / ping, res['trigger']['wall_s'] / ping,
        _mib(peak)))
    out.append('')
    out.append('Wall time per host: ping %.2f s, converge %.2f s, re-converge %.2f s, snapshot run %.2f s. '
               'Tasks per host (PLAY RECAP): converge %s; re-converge %s.'
               % (ping / hosts, res['converge']['wall_s'] / hosts, res['reconverge']['wall_s'] / hosts,
                  res['trigger']['wall_s'] / hosts, _recap_summary(os.path.join(args.out, 'converge.log')),
                  _recap_summary(os.path.join(args.out, 'reconverge.log'))))
    out.append('')
    out.append('## Controller memory')
    out.append('')
    out.append('| step | wall s | max RSS, largest process (`/usr/bin/time -v`) MiB | main process peak RSS MiB '
               '| whole tree peak PSS MiB | whole tree peak RSS MiB | processes at peak |')
    out.append('|---|---:|---:|---:|---:|---:|---:|')
    for name, label in steps:
        r = res[name]
        out.append('| %s | %.1f | %s | %s | %s | %s | %d |' % (
            label, r['wall_s'], _mib(r['time_maxrss_kb']), _mib(r['main_peak_rss_kb']),
            _mib(r['tree_peak_pss_kb']), _mib(r['tree_peak_rss_kb']), r['tree_peak_procs']))
    out.append('')
    out.append('- *Max RSS, largest process*: `/usr/bin/time -v`\'s "Maximum resident set size". GNU time '
               'reports `ru_maxrss` from `wait4()`, which Linux takes as the largest peak of any single process '
               'in the tree (the main process or one of its waited-for descendants), never a sum.')
    out.append('- *Main process*: the peak RSS of the `ansible`/`ansible-playbook` process itself, sampled.')
    out.append('- *Whole tree*: every process under it (the %d forked workers, the `docker exec` clients '
               'that the `community.docker.docker` connection starts for each task, and their '
               'children), sampled from `/proc/PID/smaps_rollup` every %.2f s; the peak of the sum. '
               'PSS shares the pages that forked workers still share with the main process, so it is '
               'the honest total; the RSS sum counts those shared pages once per process and overstates it. '
               'Sampling can miss short peaks.' % (forks, res['ping']['interval_s']))
    out.append('- Not counted: `dockerd`, `containerd` and the containers themselves.')
    out.append('')
    out.append('## The run')
    out.append('')
    mix = ', '.join('%d %s' % (n, k) for k, n in sorted(meta['mix'].items()))
    out.append('- Hosts: %s; images `fslinks-debian:cron` (`cron -f` as PID 1) and `fslinks-debian:systemd` '
               '(systemd as PID 1); connection `community.docker.docker`.' % mix)
    out.append('- Data: three loop filesystems (ext4, XFS `reflink=1`, btrfs) shared by the hosts; each host '
               'bind-mounts its own folder as `/data` (on btrfs `src` is a subvolume of its own).')
    out.append('- Methods found by the triggered runs: %s.' % ', '.join(
        '%s: %s' % (fs, '/'.join(m)) for fs, m in sorted(verified['methods'].items())))
    out.append('- Starting the %d containers (`molecule/shared/create.yml`, not part of the table): %.1f s.'
               % (hosts, create['wall_s']))
    if meta.get('commit'):
        out.append('- Collection measured: `%s` (`git describe --always --dirty` of the checkout when the run '
                   'started; `-dirty`: uncommitted changes were part of the copy).' % meta['commit'])
    else:
        out.append('- Collection measured: not recorded (this run predates the recording); its converge log '
                   'names the tasks run: `tests/output/fleet/converge.log`.')
    out.append('- Controller: %s CPUs, %s; Python %s, ansible-core %s, community.docker %s; Docker %s. '
               'Load average before the run: %s, after: %s (the machine may be shared: '
               'timings are controller-bound and move with other load).'
               % (meta['cpus'], meta['kernel'], meta['python'], meta['ansible_core'], meta['community_docker'],
                  meta['docker'], meta['load_before'], meta.get('load_after', '?')))
    out.append('- Settings: `-f %d`, `pipelining = True`, `gathering = explicit`, '
               '`interpreter_python = /usr/bin/python3`; a ping before the measured one warms the '
               'containers up; each step is timed from start to exit of the command.' % forks)
    out.append('')
    out.append('Run it again with `make fleet` (root, Docker; FLEET_HOSTS, FLEET_SYSTEMD, FLEET_FORKS to '
               'change the shape); raw logs and measurements go to `tests/output/fleet/`.')
    out.append('')
    tmp = args.doc + '.tmp'
    with open(tmp, 'w') as handle:
        handle.write('\n'.join(out))
    os.rename(tmp, args.doc)
    print('fleet: wrote %s' % args.doc)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('populate')
    p.add_argument('dir')
    p.add_argument('host')
    p = sub.add_parser('measure')
    p.add_argument('--name', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--interval', type=float, default=0.25)
    p.add_argument('command', nargs=argparse.REMAINDER)
    p = sub.add_parser('recap')
    p.add_argument('log')
    p.add_argument('hosts')
    p.add_argument('--no-changes', action='store_true')
    p = sub.add_parser('verify')
    p.add_argument('--hosts', required=True)
    p.add_argument('--disks', required=True)
    p.add_argument('--trigger-log', required=True)
    p.add_argument('--out', required=True)
    p = sub.add_parser('render')
    p.add_argument('--out', required=True)
    p.add_argument('--doc', required=True)
    args = parser.parse_args(argv)
    return {'populate': populate, 'measure': measure, 'recap': recap, 'verify': verify, 'render': render}[args.cmd](args)


if __name__ == '__main__':
    sys.exit(main())
