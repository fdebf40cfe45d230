# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fslinks.snapshots.reflink_copy through real ansible runs on loop filesystems.

Each ansible run costs about 1.5 s, so every run is asked several questions. What the module
says (changed, method, bytes_*) is checked against what is on disk: FIEMAP through the
engine's extents_equal, filefrag, cmp and rsync -aHAX --checksum.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import textwrap

import pytest

from helpers.ansible_run import run_adhoc, run_playbook, run_tasks
from helpers.oracles import (
    check_hostile_copy, extents_equal, filefrag_shared, rsync_diff, same_content, state, temp_leftovers,
)
from helpers.trees import NS, data, make_hostile_tree, write

pytestmark = [pytest.mark.loopfs, pytest.mark.ansible]


def rc(src, dest, check=False, diff=False, **args):
    """One reflink_copy run; returns the whole result."""
    args.update(src=str(src), dest=str(dest))
    return run_adhoc('reflink_copy', args, check=check, diff=diff)


def small_tree(root):
    """A little tree: files in subdirectories, a symlink, a hard link pair. Returns the
    relative paths of its regular files and the sum of their distinct sizes."""
    os.makedirs(os.path.join(root, 'sub', 'deeper'))
    files = {'a.bin': 1 << 20, 'sub/b.bin': 300_000, 'sub/deeper/c.txt': 5000, 'empty': 0}
    for i, (rel, size) in enumerate(files.items()):
        write(os.path.join(root, rel), data(size), mtime_ns=NS + i)
    os.link(os.path.join(root, 'a.bin'), os.path.join(root, 'sub', 'a-hardlink'))
    os.symlink('../a.bin', os.path.join(root, 'sub', 'link'))
    return sorted(files), sum(files.values())


# ---------------------------------------------------------------- copy, then run again

@pytest.mark.parametrize('fsname,method', [('xfs', 'reflink'), ('btrfs', 'reflink'), ('ext4', 'copy')])
def test_copy_file_and_tree_then_rerun_unchanged(request, workdir, fsname, method):
    w = workdir(request.getfixturevalue(fsname))
    size = (2 << 20) + 1
    src = write(w / 'file', data(size), mtime_ns=NS)
    rels, total = small_tree(w / 'tree')

    res = rc(w / 'file', w / 'file.copy')
    assert res['failed'] is False and res['changed'] is True, res
    assert res['method'] == method and res['files'] == 1
    assert same_content(src, w / 'file.copy')
    if method == 'reflink':
        assert res['bytes_cloned'] == size and res['bytes_copied'] == 0
        assert extents_equal(src, w / 'file.copy') and filefrag_shared(w / 'file.copy')
    else:
        assert res['bytes_copied'] == size and res['bytes_cloned'] == 0
        assert not extents_equal(src, w / 'file.copy') and not filefrag_shared(w / 'file.copy')

    res = rc(w / 'tree', w / 'tree.copy')
    assert res['changed'] is True and res['method'] == method, res
    assert res['files'] == len(rels) + 1           # + the hard link's second name
    assert res['stats']['hardlinks'] == 1 and res['stats']['symlinks'] == 1
    assert res['bytes_cloned' if method == 'reflink' else 'bytes_copied'] == total
    assert rsync_diff(w / 'tree', w / 'tree.copy') == []
    for rel in rels:
        if os.path.getsize(w / 'tree' / rel):
            assert extents_equal(w / 'tree' / rel, w / 'tree.copy' / rel) == (method == 'reflink'), rel
    assert os.stat(w / 'tree.copy' / 'a.bin').st_ino == os.stat(w / 'tree.copy' / 'sub' / 'a-hardlink').st_ino

    before = state(w)
    for name in ('file', 'tree'):
        again = rc(w / name, w / (name + '.copy'))
        assert again['changed'] is False, again
        assert again['method'] == 'none'
        assert again['bytes_cloned'] == 0 and again['bytes_copied'] == 0
    assert state(w) == before, 'an up-to-date run touched something'


def test_preserve_mode_only_is_idempotent_by_extents(xfs, workdir):
    """Without timestamps, dest's mtime is not src's: FIEMAP has to tell the data is there."""
    w = workdir(xfs)
    small_tree(w / 'tree')
    first = rc(w / 'tree', w / 'copy', preserve=['mode'])
    assert first['changed'] is True and first['method'] == 'reflink'
    assert os.stat(w / 'copy' / 'a.bin').st_mtime_ns != NS
    before = state(w / 'copy')
    again = rc(w / 'tree', w / 'copy', preserve=['mode'])
    assert again['changed'] is False and again['method'] == 'none', again
    assert state(w / 'copy') == before


def test_metadata_only_change_keeps_dest_data(xfs, workdir):
    w = workdir(xfs)
    src = write(w / 'file', data(1 << 20), mtime_ns=NS, mode=0o644)
    rc(w / 'file', w / 'copy')
    ino = os.stat(w / 'copy').st_ino
    os.chmod(src, 0o640)
    os.chown(src, 1234, 5678)
    os.utime(src, ns=(NS, NS + 999))        # touch -m

    res = rc(w / 'file', w / 'copy')

    assert res['changed'] is True and res['method'] == 'none', res
    assert res['bytes_cloned'] == 0 and res['bytes_copied'] == 0
    st = os.stat(w / 'copy')
    assert st.st_ino == ino, 'data rewritten for a metadata-only change'
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o640, 1234, 5678, NS + 999)
    assert extents_equal(src, w / 'copy')


# ---------------------------------------------------------------- no reflink possible

def test_auto_falls_back_to_copy_across_filesystems(xfs, xfs2, ext4, workdir):
    ws = workdir(xfs)
    size = (1 << 20) + 3
    src = write(ws / 'file', data(size))
    rels, total = small_tree(ws / 'tree')
    w2, w4 = workdir(xfs2), workdir(ext4)

    res = rc(ws / 'file', w2 / 'file')
    assert res['changed'] is True and res['method'] == 'copy', res
    assert res['bytes_copied'] == size and res['bytes_cloned'] == 0
    assert same_content(src, w2 / 'file') and not filefrag_shared(w2 / 'file')
    assert not filefrag_shared(src)

    res = rc(ws / 'tree', w4 / 'tree')
    assert res['changed'] is True and res['method'] == 'copy', res
    assert res['bytes_copied'] == total and res['bytes_cloned'] == 0
    assert rsync_diff(ws / 'tree', w4 / 'tree') == []
    assert not any(filefrag_shared(w4 / 'tree' / r) for r in rels if os.path.getsize(ws / 'tree' / r))


ALWAYS = [
    ('ext4', 'ext4', 'file', 'filesystem does not support reflink'),
    ('ext4', 'ext4', 'tree', 'filesystem does not support reflink'),
    ('xfs', 'xfs2', 'file', 'src and dest are on different filesystems'),
    ('xfs', 'ext4', 'tree', 'src and dest are on different filesystems'),
]


@pytest.mark.parametrize('src_fs,dest_fs,kind,words', ALWAYS,
                         ids=['ext4-file', 'ext4-tree', 'xfs-to-xfs2-file', 'xfs-to-ext4-tree'])
def test_always_fails_and_creates_nothing(request, workdir, src_fs, dest_fs, kind, words):
    ws, wd = workdir(request.getfixturevalue(src_fs)), workdir(request.getfixturevalue(dest_fs))
    if kind == 'file':
        write(ws / 'src', data(200_000))
    else:
        small_tree(ws / 'src')
    before = sorted(os.listdir(wd))

    res = rc(ws / 'src', wd / 'dest', reflink='always')

    assert res['failed'] is True, res
    assert words in res['msg'], res['msg']
    assert 'dest' in res['msg']
    assert not os.path.lexists(wd / 'dest')
    assert sorted(os.listdir(wd)) == before
    assert temp_leftovers(wd) == []


# ---------------------------------------------------------------- check and diff modes

def _lines(text):
    return [line for line in (text or '').splitlines() if line.strip()]


def test_check_mode_and_diff(xfs, ext4, workdir):
    w = workdir(xfs)
    src = write(w / 'file', data(12345), mtime_ns=NS, mode=0o640)
    os.chown(src, 1234, 5678)
    small_tree(w / 'tree')
    before = state(w)

    # A new file: predicted, with a diff, nothing created.
    res = rc(w / 'file', w / 'file.copy', check=True, diff=True)
    assert res['changed'] is True and res['method'] == 'reflink', res
    assert not os.path.lexists(w / 'file.copy')
    diff = res['diff']
    assert _lines(diff['before']) == []
    (after,) = _lines(diff['after'])
    for part in ('type=file', 'size=12345', 'mode=0640', 'owner=1234:5678', 'method=reflink'):
        assert part in after, (part, after)

    # A new tree: predicted, nothing created, not even a temporary directory.
    res = rc(w / 'tree', w / 'tree.copy', check=True, diff=True)
    assert res['changed'] is True, res
    after = '\n'.join(_lines(res['diff']['after']))
    assert 'type=directory' in after and 'a.bin' in after and 'method=reflink' in after
    assert state(w) == before
    assert temp_leftovers(w) == []

    # Where no reflink is possible, the prediction says copy.
    e = workdir(ext4)
    res = rc(w / 'file', e / 'file.copy', check=True, diff=True)
    assert res['changed'] is True and res['method'] == 'copy'
    assert 'method=copy' in res['diff']['after']
    assert os.listdir(e) == []

    # Up to date: check mode predicts no change.
    rc(w / 'tree', w / 'tree.copy')
    res = rc(w / 'tree', w / 'tree.copy', check=True, diff=True)
    assert res['changed'] is False and res['method'] == 'none', res
    assert _lines(res['diff']['after']) == []

    # A metadata change: before/after show old and new mode; dest untouched in check mode.
    old_mode = stat.S_IMODE(os.stat(w / 'tree.copy' / 'a.bin').st_mode)
    assert old_mode != 0o600
    os.chmod(w / 'tree' / 'a.bin', 0o600)
    dest_before = state(w / 'tree.copy')
    res = rc(w / 'tree', w / 'tree.copy', check=True, diff=True)
    assert res['changed'] is True and res['method'] == 'none', res
    # a.bin has a second name (sub/a-hardlink): the walk reports whichever it meets first.
    old = [line for line in _lines(res['diff']['before']) if line.startswith(('a.bin', 'sub/a-hardlink'))]
    new = [line for line in _lines(res['diff']['after']) if line.startswith(('a.bin', 'sub/a-hardlink'))]
    assert len(old) == 1 and 'mode=%04o' % old_mode in old[0], old
    assert len(new) == 1 and 'mode=0600' in new[0] and 'size=%d' % (1 << 20) in new[0], new
    assert state(w / 'tree.copy') == dest_before


# ---------------------------------------------------------------- backup

STAMP = re.compile(r'\.\d{4}-\d\d-\d\dT\d{6}Z~$')


def test_backup_keeps_old_dest_as_reflink(xfs, workdir):
    w = workdir(xfs)
    old, new = data(1 << 20), data(1 << 20)
    write(w / 'dest', old, mtime_ns=NS)
    subprocess.run(['cp', '--reflink=always', str(w / 'dest'), str(w / 'keep')], check=True)
    write(w / 'src', new, mtime_ns=NS + 1)

    res = rc(w / 'src', w / 'dest', backup=True)

    assert res['changed'] is True and res['method'] == 'reflink', res
    backup = res['backup_file']
    assert STAMP.search(backup) and os.path.dirname(backup) == str(w), backup
    assert open(backup, 'rb').read() == old
    assert extents_equal(backup, w / 'keep'), 'backup is not a reflink of the old data'
    assert open(w / 'dest', 'rb').read() == new and extents_equal(w / 'src', w / 'dest')

    again = rc(w / 'src', w / 'dest', backup=True)
    assert again['changed'] is False and 'backup_file' not in again, again
    assert [n for n in os.listdir(w) if n.endswith('~')] == [os.path.basename(backup)]


# ---------------------------------------------------------------- bad input (one playbook)

def test_bad_input_fails_naming_path_and_cause(xfs, workdir):
    w = workdir(xfs)
    write(w / 'file', data(50_000))
    small_tree(w / 'tree')
    write(w / 'existing-file', b'keep me\n')
    (w / 'existing-dir').mkdir()
    write(w / 'existing-dir' / 'inside', b'keep me too\n')
    cases = [
        ('src missing', w / 'nope', w / 'out', ['nope', 'no such file or directory']),
        ('dir onto file', w / 'tree', w / 'existing-file', ['existing-file', 'is a directory']),
        ('file onto dir', w / 'file', w / 'existing-dir', ['existing-dir', 'is a directory']),
        ('same file', w / 'file', w / 'file', [str(w / 'file'), 'same file']),
        ('dest inside src', w / 'tree', w / 'tree' / 'sub' / 'copy', ['tree/sub/copy', 'inside']),
        ('dest parent missing', w / 'file', w / 'missing' / 'out', ['missing', 'no such file or directory']),
        ('relative src', 'some/file', w / 'out', ['some/file', 'absolute']),
        ('relative dest', w / 'file', 'out', ['out', 'absolute']),
    ]
    tasks = [{'name': name, 'fslinks.snapshots.reflink_copy': {'src': str(s), 'dest': str(d)},
              'ignore_errors': True} for name, s, d, _expect in cases]
    before = state(w)

    results = run_tasks(tasks)

    assert len(results) == len(cases)
    for (name, _s, _d, words), (status, res) in zip(cases, results):
        assert status == 'FAILED', (name, status, res)
        for word in words:
            assert word in res['msg'], (name, word, res['msg'])
        assert 'Traceback' not in res['msg'] and 'MODULE FAILURE' not in res['msg'], (name, res)
    assert state(w) == before
    assert temp_leftovers(w) == []


# ---------------------------------------------------------------- trees with everything

def test_rich_tree_through_ansible(xfs, workdir):
    w = workdir(xfs)
    outside = w / 'outside'
    outside.mkdir()
    tree = make_hostile_tree(w / 'src', outside)

    res = rc(w / 'src', w / 'dest', diff=True)

    assert res['failed'] is False and res['method'] == 'reflink', res
    check_hostile_copy(tree, w / 'dest')
    # Names that are not UTF-8 reach the diff readable (\xNN), without breaking the JSON.
    after = res['diff']['after']
    assert 'bad-\\xff\\xfe-utf8' in after and '\\xff/inside' in after, after
    assert 'null-like: type=char' in after and 'fifo: type=fifo' in after


def test_enospc_through_ansible(xfs, small_ext4, workdir):
    w = workdir(xfs)
    os.makedirs(w / 'src' / 'sub')
    for i in range(3):
        write(w / 'src' / 'sub' / ('f%d' % i), data(7 << 20))
    before = sorted(os.listdir(small_ext4))

    res = rc(w / 'src', small_ext4 / 'copy')

    assert res['failed'] is True
    assert 'no space left' in res['msg'].lower(), res['msg']
    assert sorted(os.listdir(small_ext4)) == before
    assert temp_leftovers(small_ext4) == []


# ---------------------------------------------------------------- a playbook

def test_playbook_copy_rerun_check_and_assert(xfs, workdir):
    w = workdir(xfs)
    small_tree(w / 'src')
    playbook = textwrap.dedent('''\
        - hosts: localhost
          gather_facts: false
          vars:
            src: "{w}/src"
            dest: "{w}/dest"
          tasks:
            - name: Copy the tree
              fslinks.snapshots.reflink_copy:
                src: "{{{{ src }}}}"
                dest: "{{{{ dest }}}}"
                reflink: always
              register: first

            - name: Copy it again
              fslinks.snapshots.reflink_copy:
                src: "{{{{ src }}}}"
                dest: "{{{{ dest }}}}"
              register: second

            - name: Predict a copy to a new place
              fslinks.snapshots.reflink_copy:
                src: "{{{{ src }}}}"
                dest: "{{{{ dest }}}}-new"
              check_mode: true
              register: predicted

            - name: Look for the predicted copy
              ansible.builtin.stat:
                path: "{{{{ dest }}}}-new"
              register: new_dest

            - name: Facts about the copy
              fslinks.snapshots.link_facts:
                compare:
                  - ["{{{{ src }}}}/a.bin", "{{{{ dest }}}}/a.bin"]

            - name: Check everything
              ansible.builtin.assert:
                that:
                  - first is changed
                  - first.method == 'reflink'
                  - first.bytes_cloned > 0
                  - second is not changed
                  - second.method == 'none'
                  - predicted is changed
                  - not new_dest.stat.exists
                  - ansible_facts.link_facts.compare[0].fully_shared
                  - not ansible_facts.link_facts.compare[0].same_inode
        ''').format(w=w)

    proc = run_playbook(playbook)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r'localhost\s*:\s*ok=6\s+changed=2\s+unreachable=0\s+failed=0', proc.stdout), proc.stdout
    assert not os.path.lexists(w / 'dest-new')
    assert extents_equal(w / 'src' / 'a.bin', w / 'dest' / 'a.bin')
