# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inspection (module_utils/_inspect.py) on real loop ext4/XFS/btrfs, per method: diff against
rsync's itemized changes, versions, usage exact on files of known size and close to
`btrfs filesystem du`."""

import os
import subprocess
from pathlib import Path

import pytest

from helpers.settle import settle
from helpers.snapshots import Clock
from helpers.trees import create_subvolume

from ansible_collections.fslinks.snapshots.plugins.module_utils import _inspect
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import BadInput
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

pytestmark = pytest.mark.loopfs

# (filesystem, method): the method each filesystem picks by itself, and hard links on XFS too.
CASES = [('ext4', 'hardlink'), ('xfs', 'reflink'), ('btrfs', 'btrfs'), ('xfs', 'hardlink')]
IDS = ['%s-%s' % c for c in CASES]
KIB = 1024


def snap(src, dest, clock, method):
    res = run(Request(str(src), str(dest), method=method), now=clock())
    assert res['method'] == method, res
    return Path(res['snapshot'])


def setup_case(request, workdir, kind):
    mnt = request.getfixturevalue(kind)
    work = workdir(mnt)
    src = work / 'src'
    if kind == 'btrfs':
        create_subvolume(src)
    else:
        src.mkdir()
    return work, src, work / 'snaps'


def write(path, data, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


# ---------------------------------------------------------------- diff

def rsync_items(a, b):
    """What rsync would do to A to make it B, as our four sets (--checksum: a '>f' is a content
    change, not a quick-check guess; --modify-window=-1: nanosecond times, as we compare)."""
    proc = subprocess.run(['rsync', '-ani', '--delete', '--checksum', '--modify-window=-1', '-AX',
                           '--numeric-ids', '%s/' % b, '%s/' % a], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = {'added': set(), 'deleted': set(), 'modified': set(), 'metadata': set()}
    for line in proc.stdout.decode('utf-8', 'surrogateescape').splitlines():
        code, path = line[:11], line[12:]
        path = path.split(' -> ')[0].rstrip('/') or '.'
        if code.startswith('*deleting'):
            out['deleted'].add(path)
        elif '+++++++++' in code:
            out['added'].add(path)
            if os.path.lexists(os.path.join(a, path)):     # a type change: rsync replaces it silently
                out['deleted'].add(path)
        elif code[0] == '>' or code[2] == 'c':
            out['modified'].add(path)
        elif code[2:].strip('.'):
            out['metadata'].add(path)
    return out


def ours(found):
    return {k: set(found[k]) for k in ('added', 'deleted', 'modified', 'metadata')}


def make_tree(src):
    data = os.urandom(64 * KIB)
    write(src / 'same', data, 1_600_000_000)
    write(src / 'content', b'a' * 5000, 1_600_000_000)
    write(src / 'grows', b'log\n' * 100, 1_600_000_000)
    write(src / 'touched', data[:10000], 1_600_000_000)
    write(src / 'chmod', b'm', 1_600_000_000)
    write(src / 'chown', b'o', 1_600_000_000)
    write(src / 'xattr', b'x', 1_600_000_000)
    write(src / 'gone', b'g', 1_600_000_000)
    write(src / 'olddir' / 'sub' / 'deep', b'd')
    write(src / 'file2dir', b'f')
    write(src / 'dir2link' / 'inner', b'i')
    os.symlink('target-one', src / 'link')
    os.symlink('fixed', src / 'linktime')
    os.mkfifo(src / 'fifo')
    write(src / 'keep' / 'stays', b's', 1_600_000_000)


def mutate_tree(src):
    write(src / 'content', b'b' * 5000, 1_600_000_100)        # same size, new data and time
    with open(src / 'grows', 'ab') as handle:
        handle.write(b'more\n')
    os.utime(src / 'touched', ns=(1_700_000_000_123456789, 1_700_000_000_123456789))
    os.chmod(src / 'chmod', 0o600)
    os.chown(src / 'chown', 4321, 4322)
    os.setxattr(src / 'xattr', b'user.note', b'hello')
    os.unlink(src / 'gone')
    subprocess.run(['rm', '-rf', str(src / 'olddir')], check=True)
    write(src / 'newdir' / 'a' / 'b', b'new')
    os.unlink(src / 'file2dir')
    write(src / 'file2dir' / 'now-a-dir', b'!')
    subprocess.run(['rm', '-rf', str(src / 'dir2link')], check=True)
    os.symlink('somewhere', src / 'dir2link')
    os.unlink(src / 'link')
    os.symlink('target-two', src / 'link')
    os.utime(src / 'linktime', ns=(1_500_000_000_000000000, 1_500_000_000_000000000), follow_symlinks=False)
    os.symlink('new-link', src / 'added-link')


@pytest.mark.parametrize('kind,method', CASES, ids=IDS)
def test_diff_equals_rsync_itemize(kind, method, request, workdir):
    work, src, dest = setup_case(request, workdir, kind)
    clock = Clock()
    make_tree(src)
    s1 = snap(src, dest, clock, method)
    mutate_tree(src)
    s2 = snap(src, dest, clock, method)

    found = _inspect.diff(str(s1), str(s2))
    assert ours(found) == rsync_items(s1, s2)
    # The expected classification, independently of rsync.
    assert {'content', 'grows', 'link'} <= set(found['modified'])
    assert {'touched', 'chmod', 'chown', 'xattr', 'linktime'} <= set(found['metadata'])
    assert found['changes']['chown'] == ['o', 'g'] and found['changes']['xattr'] == ['x']
    assert found['changes']['touched'] == ['t'] and 's' in found['changes']['grows']
    assert {'gone', 'olddir', 'olddir/sub', 'olddir/sub/deep', 'file2dir', 'dir2link', 'dir2link/inner'} \
        <= set(found['deleted'])
    assert {'newdir', 'newdir/a', 'newdir/a/b', 'file2dir', 'file2dir/now-a-dir', 'dir2link', 'added-link'} \
        <= set(found['added'])
    assert not {'same', 'fifo', 'keep', 'keep/stays'} & set().union(*ours(found).values())
    # Nothing changed since s2: the newest snapshot and live are equal.
    assert ours(_inspect.diff(str(s2), str(src))) == rsync_items(s2, src) == {
        'added': set(), 'deleted': set(), 'modified': set(), 'metadata': set()}
    # And backwards: the reverse diff swaps added and deleted.
    back = _inspect.diff(str(s2), str(s1))
    assert ours(back) == rsync_items(s2, s1)
    assert set(back['added']) == set(found['deleted']) and set(back['deleted']) == set(found['added'])


def test_diff_refuses_nothing_outside_and_never_follows(xfs, workdir):
    """A symlink to a directory outside is an entry, not a way out: its target's files are not
    walked."""
    work = workdir(xfs)
    (work / 'outside').mkdir()
    write(work / 'outside' / 'secret', b's')
    a, b = work / 'a', work / 'b'
    a.mkdir()
    b.mkdir()
    os.symlink(str(work / 'outside'), a / 'escape')
    os.mkdir(b / 'escape')
    found = _inspect.diff(str(a), str(b))
    assert found['added'] == ['escape'] and found['deleted'] == ['escape'], found
    assert not any('secret' in p for k in ('added', 'deleted') for p in found[k])


# ---------------------------------------------------------------- versions

@pytest.mark.parametrize('kind,method', CASES[:3], ids=IDS[:3])
def test_versions_collapse_identical_neighbours(kind, method, request, workdir):
    """A file changed before the 2nd and the 4th of 5 snapshots has 3 versions; live equals the
    newest and joins its run."""
    work, src, dest = setup_case(request, workdir, kind)
    clock = Clock()
    write(src / 'dir' / 'f', b'v1', 1_600_000_000)
    os.symlink('dir', src / 'via-link')
    made = []
    for i in range(5):
        if i in (1, 3):
            write(src / 'dir' / 'f', b'version %d' % i, 1_600_000_000 + i)
        made.append(snap(src, dest, clock, method).name)
    found = _inspect.versions(str(dest), 'dir/f', live=str(src))
    assert [v['snapshot'] for v in found] == [made[0], made[1], made[3]], found
    assert [v['snapshots'] for v in found] == [[made[0]], [made[1], made[2]], [made[3], made[4], 'live']]
    assert [v['size'] for v in found] == [2, 9, 9]
    assert found[2]['mtime'] == '2020-09-13T12:26:43Z' and found[0]['type'] == 'file'
    assert found[1]['path'] == str(dest / made[1] / 'dir' / 'f')
    # An absolute path inside src means the same file.
    assert _inspect.versions(str(dest), str(src / 'dir' / 'f'), live=str(src)) == found
    # A directory has versions too: rewriting f in place left dir's own metadata alone.
    dirs = _inspect.versions(str(dest), 'dir', live=str(src))
    assert len(dirs) == 1 and dirs[0]['type'] == 'directory' and len(dirs[0]['snapshots']) == 6, dirs
    # Refused: "..", absolute paths elsewhere, paths through a symlink.
    for bad in ('../etc/passwd', 'dir/../../x', '/etc/passwd'):
        with pytest.raises(BadInput):
            _inspect.versions(str(dest), bad, live=str(src))
    with pytest.raises(BadInput) as err:
        _inspect.versions(str(dest), 'via-link/f', live=str(src))
    assert 'symlink' in str(err.value)
    # The symlink itself is a path of its own (not followed).
    links = _inspect.versions(str(dest), 'via-link', live=str(src))
    assert len(links) == 1 and links[0]['type'] == 'link' and len(links[0]['snapshots']) == 6
    assert _inspect.versions(str(dest), 'no/such/file', live=str(src)) == []
    # A snapshot pruned meanwhile is left out.
    pruned = _inspect.versions(str(dest), 'dir/f', names=[made[0], '2030-01-01T000000Z', made[1]])
    assert [v['snapshots'] for v in pruned] == [[made[0]], [made[1]]]


# ---------------------------------------------------------------- usage

def known_chain(src, dest, method):
    """Three snapshots: `all` (256K) in all and live, `one` (128K) in s1 only, `two` (64K) in s1
    and s2, `last` (32K) in s3 only."""
    clock = Clock()
    write(src / 'all', os.urandom(256 * KIB))
    write(src / 'one', os.urandom(128 * KIB))
    write(src / 'd' / 'two', os.urandom(64 * KIB))
    names = [snap(src, dest, clock, method).name]
    os.unlink(src / 'one')
    names.append(snap(src, dest, clock, method).name)
    os.unlink(src / 'd' / 'two')
    write(src / 'last', os.urandom(32 * KIB))
    names.append(snap(src, dest, clock, method).name)
    os.unlink(src / 'last')
    settle(dest / names[0] / 'one', dest / names[2] / 'last')
    return names


@pytest.mark.parametrize('kind,method', CASES[:3], ids=IDS[:3])
def test_usage_exact_on_known_files(kind, method, request, workdir):
    work, src, dest = setup_case(request, workdir, kind)
    names = known_chain(src, dest, method)
    use = _inspect.usage(str(dest), live=str(src))
    got = [(s['name'], s['method'], s['exclusive_bytes'], s['shared_bytes']) for s in use['snapshots']]
    assert got == [(names[0], method, 128 * KIB, 320 * KIB),
                   (names[1], method, 0, 320 * KIB),
                   (names[2], method, 32 * KIB, 256 * KIB)], use
    assert use['total_bytes'] == 480 * KIB and use['bytes'] == 'allocated'
    # Hard links: live holds its own copy of `all`; reflinks and btrfs share it with live.
    assert use['chain_exclusive_bytes'] == (480 if method == 'hardlink' else 224) * KIB
    assert use['estimate'] is False and not any(s['estimate'] for s in use['snapshots'])
    # Without live, the kernel's shared flag (reflink, btrfs) or the link count (hard links)
    # still keeps what live uses out of "exclusive".
    alone = _inspect.usage(str(dest))
    assert [s['exclusive_bytes'] for s in alone['snapshots']] == [128 * KIB, 0, 32 * KIB]


def test_usage_close_to_btrfs_filesystem_du(btrfs, workdir):
    work = workdir(btrfs)
    src = create_subvolume(work / 'src')
    dest = work / 'snaps'
    names = known_chain(src, dest, 'btrfs')
    write(src / 'big', os.urandom(1024 * KIB))
    names.append(snap(src, dest, Clock(start=Clock().t.replace(year=2027)), 'btrfs').name)
    write(src / 'big', os.urandom(1024 * KIB))         # rewritten whole in live
    os.sync()
    use = _inspect.usage(str(dest), live=str(src))
    proc = subprocess.run(['btrfs', 'filesystem', 'du', '--raw'] + [str(dest / n) for n in names],
                          capture_output=True, text=True, check=True)
    theirs = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit() and fields[3] in [str(dest / n) for n in names]:
            theirs[os.path.basename(fields[3])] = (int(fields[0]), int(fields[1]))
    assert len(theirs) == len(names), proc.stdout
    for snapshot in use['snapshots']:
        total, exclusive = theirs[snapshot['name']]
        assert abs(snapshot['exclusive_bytes'] - exclusive) <= 16 * KIB, (snapshot, theirs)
        assert abs(snapshot['exclusive_bytes'] + snapshot['shared_bytes'] - total) <= 16 * KIB, (snapshot, theirs)
    assert use['snapshots'][-1]['exclusive_bytes'] == 1024 * KIB    # the old big, rewritten in live


def test_usage_says_estimate_for_compressed_and_inline_extents(loop_fs):
    """btrfs with compression: extents are ENCODED (FIEMAP gives their uncompressed length) and
    tiny files are inline (in metadata): the figures are flagged, with the reasons."""
    mnt = loop_fs('btrfs', '256M', mount_options='compress=zstd,max_inline=2048')
    src = create_subvolume(mnt / 'src')
    write(src / 'text', b'compressible line\n' * 20000)
    write(src / 'tiny', b'x' * 100)
    snap(src, mnt / 'snaps', Clock(), 'btrfs')
    os.sync()
    use = _inspect.usage(str(mnt / 'snaps'), live=str(src))
    assert use['estimate'] is True and use['snapshots'][0]['estimate'] is True, use
    reasons = ' '.join(use['reasons'])
    assert 'compressed' in reasons and 'inline' in reasons, use


def test_usage_never_counts_the_root_inside_live_as_live(xfs, workdir):
    """A root inside src that the caller forgot to exclude is not walked as live data."""
    work = workdir(xfs)
    src = work / 'src'
    write(src / 'f', os.urandom(64 * KIB))
    dest = src / 'snaps'
    made = run(Request(str(src), str(dest), method='reflink', exclude=['/snaps/']), now=Clock()())
    os.unlink(src / 'f')
    settle(os.path.join(made['snapshot'], 'f'))
    use = _inspect.usage(str(dest), live=str(src))          # no excluder given
    assert [s['exclusive_bytes'] for s in use['snapshots']] == [64 * KIB], use
    # A snapshot pruned while usage runs is left out, not an error.
    name = os.path.basename(made['snapshot'])
    later = _inspect.usage(str(dest), names=[name, '2030-01-01T000000Z'])
    assert [s['name'] for s in later['snapshots']] == [name] and later['total_bytes'] == 64 * KIB
