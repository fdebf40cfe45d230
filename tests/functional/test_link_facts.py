# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""fslinks.snapshots.link_facts through real ansible runs, and the engine's mount and
sharing facts on real mounts (mountinfo escapes, overlay probing, partial sharing)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import textwrap

import pytest

from helpers import loopfs
from helpers.ansible_run import run_adhoc, run_playbook, run_tasks
from helpers.oracles import filefrag_shared
from helpers.prereq import unavailable
from helpers.trees import data, write

from ansible_collections.fslinks.snapshots.plugins.module_utils import _facts, _mounts
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import NotSupported
from ansible_collections.fslinks.snapshots.plugins.module_utils._reflink_copy import reflink_copy

pytestmark = [pytest.mark.loopfs]


def findmnt(path, column):
    return subprocess.run(['findmnt', '-n', '-o', column, '--mountpoint', str(path)],
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def mounted(argv, mountpoint):
    subprocess.run(argv + [str(mountpoint)], check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        for _attempt in range(10):
            if subprocess.run(['umount', str(mountpoint)], capture_output=True, check=False).returncode == 0:
                break
        else:
            subprocess.run(['umount', '-l', str(mountpoint)], capture_output=True, check=False)


# ---------------------------------------------------------------- the module

@pytest.mark.ansible
def test_mounts_paths_and_compare(xfs, xfs2, ext4, btrfs, workdir):
    wx, we, wb = workdir(xfs), workdir(ext4), workdir(btrfs)
    size = 1 << 20
    a = wx / 'a'
    write(a, data(size))
    os.link(a, wx / 'hard')
    reflink_copy(str(a), str(wx / 'clone'), policy='always')
    reflink_copy(str(a), str(wx / 'copy'), policy='never')
    reflink_copy(str(a), str(wx / 'partial'), policy='always')
    with open(wx / 'partial', 'r+b') as f:          # unshare one 4 KiB block
        f.seek(8192)
        f.write(b'\0' * 4096)
        os.fsync(f.fileno())
    write(we / 'target', b'on ext4\n')
    os.symlink(we / 'target', wx / 'link')            # lives on xfs, points to ext4
    subprocess.run(['btrfs', 'subvolume', 'create', str(wb / 'sv')], check=True, capture_output=True)
    (wb / 'plain').mkdir()
    paths = [xfs, ext4, btrfs, wb / 'sv', wb / 'plain', a, wx / 'link', wx / 'missing', we / 'target']
    compare = [[a, wx / 'hard'], [a, wx / 'clone'], [a, wx / 'copy'], [a, wx / 'partial']]

    res = run_adhoc('link_facts', {'paths': [str(p) for p in paths],
                                   'compare': [[str(x), str(y)] for x, y in compare]})

    assert res['failed'] is False and res['changed'] is False, res
    facts = res['ansible_facts']['link_facts']

    # Mounts: our loop filesystems, with the kernel's answers.
    by_mount = {m['mount']: m for m in facts['mounts']}
    for mnt, fstype, reflink in ((xfs, 'xfs', True), (xfs2, 'xfs', True), (ext4, 'ext4', False),
                                 (btrfs, 'btrfs', True)):
        m = by_mount[str(mnt)]
        assert (m['fstype'], m['reflink'], m['hardlink']) == (fstype, reflink, True), m
        assert m['device'] == findmnt(mnt, 'SOURCE') and m['device'].startswith('/dev/loop'), m
        assert m['btrfs_subvolume'] == ('/' if fstype == 'btrfs' else None), m
        assert set(findmnt(mnt, 'VFS-OPTIONS').split(',')) == set(m['options'].split(',')), m

    # Paths.
    p = {k: facts['paths'][str(k)] for k in paths}
    for mnt, fstype, reflink in ((xfs, 'xfs', True), (ext4, 'ext4', False), (btrfs, 'btrfs', True)):
        f = p[mnt]
        assert f['exists'] is True and f['type'] == 'directory', f
        assert (f['mount'], f['fstype'], f['reflink']) == (str(mnt), fstype, reflink), f
        assert f['inode'] == os.stat(mnt).st_ino and f['device'] == findmnt(mnt, 'SOURCE')
    assert p[btrfs]['btrfs_subvolume'] is True            # the top-level subvolume's root
    assert p[xfs]['btrfs_subvolume'] is False
    assert p[wb / 'sv']['btrfs_subvolume'] is True and p[wb / 'sv']['mount'] == str(btrfs)
    assert p[wb / 'plain']['btrfs_subvolume'] is False and p[wb / 'plain']['type'] == 'directory'
    st = os.stat(a)
    assert {k: p[a][k] for k in ('exists', 'type', 'inode', 'nlink', 'size', 'fstype', 'mount', 'reflink')} == {
        'exists': True, 'type': 'file', 'inode': st.st_ino, 'nlink': 2, 'size': size, 'fstype': 'xfs',
        'mount': str(xfs), 'reflink': True}
    link = p[wx / 'link']
    assert link['type'] == 'link' and link['inode'] == os.lstat(wx / 'link').st_ino
    assert (link['fstype'], link['mount']) == ('xfs', str(xfs)), 'a symlink lives where its name is'
    assert p[we / 'target']['fstype'] == 'ext4' and p[we / 'target']['reflink'] is False
    assert p[wx / 'missing'] == {'exists': False}

    # Compare: hard link, clone, copy, partly shared clone.
    hard, clone, copy, partial = facts['compare']
    assert (hard['a'], hard['b']) == (str(a), str(wx / 'hard'))
    assert (hard['same_inode'], hard['fully_shared'], hard['shared_bytes']) == (True, True, size)
    assert (clone['same_inode'], clone['fully_shared'], clone['shared_bytes']) == (False, True, size)
    assert filefrag_shared(wx / 'clone')
    assert (copy['same_inode'], copy['fully_shared'], copy['shared_bytes']) == (False, False, 0)
    assert not filefrag_shared(wx / 'copy')
    assert (partial['fully_shared'], partial['shared_bytes']) == (False, size - 4096), partial


@pytest.mark.ansible
def test_probe_and_bad_compare(xfs, ext4, btrfs, workdir):
    wx, we, wb = workdir(xfs), workdir(ext4), workdir(btrfs)
    write(wx / 'f', b'x')
    listing = {w: sorted(os.listdir(w)) for w in (wx, we, wb)}
    tasks = [
        {'name': 'probe', 'fslinks.snapshots.link_facts': {'paths': [str(wx), str(we), str(wb)], 'probe': True}},
        {'name': 'compare a directory', 'ignore_errors': True,
         'fslinks.snapshots.link_facts': {'compare': [[str(wx / 'f'), str(wx)]]}},
        {'name': 'compare a missing file', 'ignore_errors': True,
         'fslinks.snapshots.link_facts': {'compare': [[str(wx / 'f'), str(wx / 'nope')]]}},
        {'name': 'compare a triple', 'ignore_errors': True,
         'fslinks.snapshots.link_facts': {'compare': [[str(wx / 'f'), str(wx / 'f'), str(wx / 'f')]]}},
    ]

    (s1, probe), (s2, isdir), (s3, missing), (s4, triple) = run_tasks(tasks)

    assert s1 == 'SUCCESS', probe
    paths = probe['ansible_facts']['link_facts']['paths']
    assert [paths[str(w)]['reflink'] for w in (wx, we, wb)] == [True, False, True]
    assert {w: sorted(os.listdir(w)) for w in (wx, we, wb)} == listing, 'probe left files behind'
    assert s2 == 'FAILED' and str(wx) in isdir['msg'] and 'not a regular file' in isdir['msg'], isdir
    assert s3 == 'FAILED' and 'nope' in missing['msg'] and 'no such file' in missing['msg'], missing
    assert s4 == 'FAILED' and 'pair' in triple['msg'], triple


@pytest.mark.ansible
@pytest.mark.parametrize('fsname,passes', [('xfs', True), ('ext4', False)])
def test_ci_gate_playbook(request, fsname, passes):
    mnt = request.getfixturevalue(fsname)
    playbook = textwrap.dedent('''\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: Learn what the data disk can do
              fslinks.snapshots.link_facts:
                paths: ["{mnt}"]
            - name: CI gate, the data disk must be able to reflink
              ansible.builtin.assert:
                that: ansible_facts.link_facts.paths['{mnt}'].reflink
                fail_msg: "{mnt} is on {{{{ ansible_facts.link_facts.paths['{mnt}'].fstype }}}}, which cannot reflink"
        ''').format(mnt=mnt)

    proc = run_playbook(playbook)

    if passes:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert 'failed=0' in proc.stdout
    else:
        assert proc.returncode != 0, proc.stdout
        assert 'is on ext4, which cannot reflink' in proc.stdout, proc.stdout
        assert 'failed=1' in proc.stdout


# ---------------------------------------------------------------- mountinfo escapes, for real

WEIRD = 'mnt a\tb\nc\\d\\040e'    # space, tab, newline, backslash, and a literal "\040"


def test_mountinfo_escapes_on_a_real_mount(xfs, workdir):
    w = workdir(xfs)
    mp = w / WEIRD
    mp.mkdir()
    with mounted(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'fslinks test src'], mp):
        raw = open('/proc/self/mountinfo', encoding='utf-8').read()
        # The kernel escaped them (so the parser had something to do).
        for esc in ('\\040', '\\011', '\\012', '\\134'):
            assert esc in raw
        mounts = _mounts.read_mounts()
        ours = [m for m in mounts if m.mountpoint == str(mp)]
        assert len(ours) == 1, [m.mountpoint for m in mounts if 'mnt a' in m.mountpoint]
        m = ours[0]
        assert (m.fstype, m.source) == ('tmpfs', 'fslinks test src')
        write(mp / 'file', b'x')
        os.symlink(xfs, mp / 'to-xfs')
        assert _mounts.mount_of(str(mp / 'file'), mounts).mountpoint == str(mp)
        assert _mounts.mount_of(str(mp / 'to-xfs'), mounts).mountpoint == str(mp)
        assert _mounts.mount_of(str(mp / 'to-xfs' / 'x'), mounts).mountpoint == str(xfs)
        assert _mounts.mount_of(str(w), mounts).mountpoint == str(xfs)
        facts = _facts.link_facts(paths=[str(mp / 'file'), str(mp / 'to-xfs')])
        f, link = facts['paths'][str(mp / 'file')], facts['paths'][str(mp / 'to-xfs')]
        assert (f['mount'], f['fstype'], f['device'], f['reflink']) == (str(mp), 'tmpfs', 'fslinks test src', False)
        assert (link['type'], link['fstype']) == ('link', 'tmpfs')
        assert [x for x in facts['mounts'] if x['mount'] == str(mp)][0]['device'] == 'fslinks test src'


# ---------------------------------------------------------------- engine details

def test_shared_bytes_never_exceeds_file_size(xfs, workdir):
    """A 10000-byte file occupies three 4 KiB blocks; the bytes of a's data that are
    shared cannot be more than a's 10000 bytes."""
    w = workdir(xfs)
    write(w / 'a', data(10_000))
    reflink_copy(str(w / 'a'), str(w / 'b'), policy='always')
    cmp = _facts.compare_files(str(w / 'a'), str(w / 'b'))
    assert cmp['fully_shared'] is True
    assert cmp['shared_bytes'] == 10_000, cmp


def test_probe_answers_for_mounts_of_unknown_type(xfs, workdir):
    """overlayfs is not in the fstype table; probe=true must prove it for the mount too
    (the docs: "by cloning a temporary file in the directory (of a path, or the mountpoint
    of a mount)"), not only for paths."""
    w = workdir(xfs)
    for d in ('lower', 'upper', 'work', 'ovl'):
        (w / d).mkdir()
    opts = 'lowerdir=%s,upperdir=%s,workdir=%s' % (w / 'lower', w / 'upper', w / 'work')
    with mounted(['mount', '-t', 'overlay', 'overlay', '-o', opts], w / 'ovl'):
        unprobed = _facts.link_facts(paths=[str(w / 'ovl')])
        probed = _facts.link_facts(paths=[str(w / 'ovl')], probe=True)
        assert os.listdir(w / 'ovl') == []

    def mount(facts):
        return [m for m in facts['mounts'] if m['mount'] == str(w / 'ovl')][0]

    assert mount(unprobed)['reflink'] is None and unprobed['paths'][str(w / 'ovl')]['reflink'] is None
    assert probed['paths'][str(w / 'ovl')]['reflink'] is True   # the kernel can clone there...
    assert mount(probed)['reflink'] is True, mount(probed)       # ...so the mount can too


def _mount_beneath(source_mountpoint, target):
    """Clone the mount at source_mountpoint and slide it beneath the mount on target
    (open_tree + move_mount(MOVE_MOUNT_BENEATH), Linux 6.5+)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, open_tree_clone, o_cloexec = -100, 1, os.O_CLOEXEC
    move_mount_f_empty_path, move_mount_beneath = 0x4, 0x200
    fd = libc.syscall(428, at_fdcwd, os.fsencode(source_mountpoint), open_tree_clone | o_cloexec)
    if fd < 0:
        pytest.skip('open_tree: %s' % os.strerror(ctypes.get_errno()))
    try:
        if libc.syscall(429, fd, b'', at_fdcwd, os.fsencode(target),
                        move_mount_f_empty_path | move_mount_beneath) != 0:
            pytest.skip('move_mount(MOVE_MOUNT_BENEATH): %s' % os.strerror(ctypes.get_errno()))
    finally:
        os.close(fd)


def test_mount_of_with_a_mount_slid_beneath(xfs, workdir):
    """A mount slid beneath another one is newer (listed later in mountinfo) but hidden:
    a file seen at the mountpoint is on the mount on top."""
    w = workdir(xfs)
    (w / 'x').mkdir()
    (w / 'y').mkdir()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mounted(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'on-top'], w / 'x'))
        stack.enter_context(mounted(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'beneath'], w / 'y'))
        write(w / 'x' / 'file', b'on top\n')
        _mount_beneath(w / 'y', w / 'x')
        stack.callback(subprocess.run, ['umount', str(w / 'x')], capture_output=True, check=False)
        assert os.listdir(w / 'x') == ['file']          # the top mount still shows
        facts = _facts.link_facts(paths=[str(w / 'x' / 'file')])['paths'][str(w / 'x' / 'file')]
        assert facts['device'] == 'on-top', facts


def test_compare_where_fiemap_is_missing_names_the_file():
    """tmpfs has no FIEMAP: the error names the file compared, not a placeholder."""
    if loopfs.fstype_of('/dev/shm') != 'tmpfs':
        unavailable('/dev/shm is not a tmpfs here (a filesystem without FIEMAP is needed)')
    d = tempfile.mkdtemp(dir='/dev/shm', prefix='fslinks-test-')
    try:
        for name in ('a', 'b'):
            with open(os.path.join(d, name), 'wb') as f:
                f.write(os.urandom(5000))
        with pytest.raises(NotSupported, match='fiemap: %s: filesystem does not support FIEMAP' % (d + '/a')):
            _facts.compare_files(os.path.join(d, 'a'), os.path.join(d, 'b'))
    finally:
        shutil.rmtree(d)
