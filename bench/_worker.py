# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One engine sample in a fresh process: ``python _worker.py JSON`` prints a JSON result.

The engine is imported exactly as the modules import it
(``ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot``, through the
.collections symlink that scripts/setup.sh makes): the code timed here is the code
hardlink_snapshot runs.  Only ``run(req)`` is timed; interpreter start-up and imports are not.
Peak memory: VmHWM from /proc/self/status at the end, the peak resident set of this process
since exec (wait4's ru_maxrss would also count the parent's pages from before exec), or the
largest peak of the engine's worker processes (RUSAGE_CHILDREN), whichever is larger.
JSON "workers": the engine's workers option (0: its default).

JSON: {"op": "snapshot", "src": ..., "dest": ..., "method": ..., "tracemalloc": false} or
{"op": "reflink_copy", "src": ..., "dest": ..., "policy": ...} (one reflink_copy: the bench's
big file) or {"op": "noop"} (imports only: the interpreter's baseline RSS). With "tracemalloc": true the run
also reports the peak of Python allocations made during run() (slower: not for timing).
"""

import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/run.py points this at a copy of the collection frozen when the run started, so that
# edits to the checkout during a run cannot mix two versions of the engine in one result.
COLLECTIONS = os.environ.get('FSLINKS_BENCH_COLLECTIONS') or os.path.join(ROOT, '.collections')


def _engine():
    link = os.path.join(COLLECTIONS, 'ansible_collections', 'fslinks', 'snapshots')
    if not os.path.exists(link) and COLLECTIONS == os.path.join(ROOT, '.collections'):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(os.path.join('..', '..', '..'), link)
        except FileExistsError:
            pass
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _snapshot
    return _snapshot


def _hwm_kb():
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def main(argv):
    job = json.loads(argv[1])
    snapshot = _engine()
    if job['op'] == 'noop':
        print(json.dumps({'seconds': 0.0, 'engine_file': snapshot.__file__, 'vmhwm_kb': _hwm_kb()}))
        return 0
    if job['op'] in ('restore', 'diff', 'reflink_copy'):
        return _inspecting(job, snapshot)
    req = snapshot.Request(job['src'], job['dest'], method=job['method'], workers=job.get('workers', 0))
    traced = None
    if job.get('tracemalloc'):        # a separate, untimed run: tracing slows Python down
        import tracemalloc  # pylint: disable=import-outside-toplevel
        tracemalloc.start()
    t0 = time.perf_counter()
    result = snapshot.run(req)
    seconds = time.perf_counter() - t0
    if job.get('tracemalloc'):
        traced = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()
    # The worker processes' peaks count too (the largest; forked pages shared with us included).
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({'vmhwm_kb': max(_hwm_kb() or 0, children_kb) or None, 'tracemalloc_peak_kb': traced,
                      'seconds': seconds, 'engine_seconds': result.get('seconds'),
                      'method': result.get('method'), 'stats': result.get('stats'),
                      'snapshot': result.get('snapshot'), 'engine_file': snapshot.__file__}))
    return 0


def _inspecting(job, snapshot):
    """A restore ({"op": "restore", "root", "snapshot", "to", "mirror"}), a diff of two trees
    ({"op": "diff", "a", "b"}) or a reflink_copy, timed the same way."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _inspect, _reflink_copy, _restore
    t0 = time.perf_counter()
    if job['op'] == 'reflink_copy':
        stats = _reflink_copy.reflink_copy(job['src'], job['dest'], policy=job['policy'])['stats']
    elif job['op'] == 'restore':
        result = _restore.restore(job['root'], snapshot=job['snapshot'], to=job['to'], mirror=job['mirror'],
                                  guard=False)
        stats = dict(result['stats'], restored=result['restored'], deleted=result['deleted'])
    else:
        found = _inspect.diff(job['a'], job['b'])
        stats = dict((k, len(found[k])) for k in ('added', 'deleted', 'modified', 'metadata'))
    seconds = time.perf_counter() - t0
    print(json.dumps({'vmhwm_kb': _hwm_kb(), 'seconds': seconds, 'stats': stats, 'method': job['op'],
                      'engine_file': snapshot.__file__}))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
