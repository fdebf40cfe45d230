# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the reflink_copy / link_facts tests: work directories on the session loop
filesystems, a rich test tree, independent oracles (rsync, FIEMAP through the engine,
filefrag), leftovers and "untouched" checks, and a batch runner for many module calls in
one ansible-playbook process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import _ansible

from ansible_collections.fslinks.snapshots.plugins.module_utils import _extents

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# A base for nanosecond timestamps: odd nanoseconds, so that a copy made with
# microsecond or second precision shows.
NS = 1_600_000_000_123_456_789


# ---------------------------------------------------------------- work directories

# ---------------------------------------------------------------- files

def write(path, data, mtime_ns=None, mode=None):
    path = os.fsencode(path)
    with open(path, 'wb') as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def data(size):
    """size bytes of random (incompressible) data."""
    return os.urandom(size)


def sha(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def same_content(a, b):
    """cmp(1) as the oracle for content equality."""
    return subprocess.run(['cmp', '-s', os.fsencode(a), os.fsencode(b)], check=False).returncode == 0


def _on_fds(func, a, b):
    fa = os.open(os.fsencode(a), os.O_RDONLY)
    try:
        fb = os.open(os.fsencode(b), os.O_RDONLY)
        try:
            return func(fa, fb)
        finally:
            os.close(fb)
    finally:
        os.close(fa)


def extents_equal(a, b):
    """FIEMAP through the engine: do a and b share all their data extents?"""
    return _on_fds(_extents.extents_equal, a, b)


def shared_bytes(a, b):
    """FIEMAP through the engine: bytes of a whose blocks are also b's."""
    return _on_fds(_extents.shared_bytes, a, b)


def filefrag_shared(path):
    """True if `filefrag -v` flags any extent of path as shared (independent of our FIEMAP code)."""
    out = subprocess.run(['filefrag', '-v', os.fsencode(path)], capture_output=True, check=True).stdout
    return b'shared' in out


# ---------------------------------------------------------------- oracles

def rsync_diff(src, dest):
    """What rsync -aHAX --checksum would still change: [] when dest is a perfect copy."""
    proc = subprocess.run(
        ['rsync', '-aHAXn', '--checksum', '--itemize-changes', '--numeric-ids', '--modify-window=-1',
         os.fsencode(src).rstrip(b'/') + b'/', os.fsencode(dest).rstrip(b'/') + b'/'],
        capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors='replace')
    return [line for line in proc.stdout.decode('utf-8', 'backslashreplace').splitlines() if line.strip()]


def leftovers(directory):
    """Temporary names of the engine (.NAME.fslinks-*) anywhere under directory."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(directory)):
        for name in dirnames + filenames:
            if name.startswith(b'.') and b'.fslinks-' in name:
                found.append(os.path.join(dirpath, name))
    return found


def state(path):
    """A fingerprint of path (file or tree, not following symlinks): inode, type, mode,
    owner, size, mtime and content of every entry.  Equal before and after = untouched."""
    path = os.fsencode(path)
    out = {}

    def one(p, rel):
        st = os.lstat(p)
        entry = (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_nlink)
        if stat.S_ISREG(st.st_mode):
            entry += (sha(p),)
        elif stat.S_ISLNK(st.st_mode):
            entry += (os.readlink(p),)
        out[rel] = entry

    if not os.path.lexists(path):
        return None
    one(path, b'.')
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                one(p, os.path.relpath(p, path))
    return out


def xattr_dump(path):
    """getfattr -d -m - of one entry (ACLs included), without the file name header."""
    out = subprocess.run(['getfattr', '-h', '-d', '-m', '-', '--absolute-names', os.fsencode(path)],
                         capture_output=True, check=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith(b'# file:')]


def acl_dump(path):
    return subprocess.run(['getfacl', '-p', '--omit-header', os.fsencode(path)],
                          capture_output=True, check=True).stdout


# ---------------------------------------------------------------- the rich tree

NAMES = {
    'space': b'with space.txt',
    'newline': b'new\nline',
    'tab': b'tab\there',
    'latin1': b'caf\xe9',           # not UTF-8
    'baddir': b'dir\xff',           # not UTF-8, a directory
}


def make_rich_tree(root, outside):
    """Build, under the new directory root, a tree with everything rsync -aHAX cares about.
    outside: an existing directory outside root that a symlink points at (holds 'marker').
    Returns a dict of interesting relative paths (bytes)."""
    r = os.fsencode(root)
    os.mkdir(r)

    def j(*parts):
        return os.path.join(r, *parts)

    write(os.path.join(os.fsencode(outside), b'marker'), b'outside the tree\n')

    write(j(b'file.txt'), b'hello world\n' * 100, mode=0o644)
    os.mkdir(j(b'sub dir'))
    os.mkdir(j(b'sub dir', b'deeper'))
    write(j(b'sub dir', NAMES['space']), b'spaces\n')
    write(j(b'sub dir', b'deeper', b'nested.bin'), data(200_000))
    write(j(NAMES['newline']), b'newline in the name\n')
    write(j(NAMES['tab']), b'tab in the name\n')
    write(j(NAMES['latin1']), b'latin-1 name\n')
    os.mkdir(j(NAMES['baddir']))
    write(j(NAMES['baddir'], b'inner'), b'inside a non-UTF-8 directory\n')
    write(j(b'empty'), b'')

    # Sparse: 64 MiB with two 4 KiB islands of data.
    with open(j(b'sparse.img'), 'wb') as f:
        f.write(b'S' * 4096)
        f.seek(32 << 20)
        f.write(b'T' * 4096)
        f.truncate(64 << 20)

    # Symlinks: relative, absolute, dangling, to a directory outside the tree.
    os.symlink(b'file.txt', j(b'rel-link'))
    os.symlink(b'/etc/passwd', j(b'abs-link'))
    os.symlink(b'does/not/exist', j(b'dangling'))
    os.symlink(os.fsencode(outside), j(b'outside-dir-link'))

    # Hard links inside the tree (3 names, one in a subdirectory).
    write(j(b'hard1'), b'one inode, three names\n')
    os.link(j(b'hard1'), j(b'sub dir', b'hard2'))
    os.link(j(b'hard1'), j(b'hard3'))

    # xattrs and ACLs.
    subprocess.run(['setfattr', '-n', 'user.x', '-v', 'hello', j(b'file.txt')], check=True)
    subprocess.run(['setfattr', '-n', 'user.dir', '-v', '0sAAEC', j(b'sub dir')], check=True)
    subprocess.run(['setfacl', '-m', 'u:1234:rw', j(b'file.txt')], check=True)
    os.mkdir(j(b'acl-dir'))
    subprocess.run(['setfacl', '-m', 'u:1234:rwx', '-d', '-m', 'u:1234:rx', j(b'acl-dir')], check=True)

    # Specials (as root).
    os.mkfifo(j(b'fifo'), 0o640)
    os.mknod(j(b'null-dev'), stat.S_IFCHR | 0o666, os.makedev(1, 3))

    # Owners and set-id modes.
    write(j(b'owned'), b'owned by 1234:5678\n')
    os.chown(j(b'owned'), 1234, 5678)
    write(j(b'suid'), b'#!/bin/sh\n', mode=0o755)
    os.chown(j(b'suid'), 1234, 5678)
    os.chmod(j(b'suid'), 0o4755)
    os.mkdir(j(b'sgid-dir'))
    os.chown(j(b'sgid-dir'), 1234, 5678)
    os.chmod(j(b'sgid-dir'), 0o2775)

    # Nanosecond mtimes on everything, directories last and deepest first.
    i = 0
    for dirpath, dirnames, filenames in os.walk(r, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            i += 1
            os.utime(os.path.join(dirpath, name), ns=(NS + 7 * i, NS + 11 * i), follow_symlinks=False)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                i += 1
                os.utime(p, ns=(NS + 7 * i, NS + 13 * i))
    os.utime(r, ns=(NS, NS + 1))
    return {
        'sparse': b'sparse.img', 'hard': [b'hard1', b'sub dir/hard2', b'hard3'],
        'outside_link': b'outside-dir-link',
    }


def check_rich_copy(src, dest, outside):
    """Assertions about a copy of make_rich_tree beyond the rsync oracle."""
    s, d = os.fsencode(src), os.fsencode(dest)
    j = os.path.join
    assert rsync_diff(s, d) == []
    # Symlinks are symlinks with the same target, never followed.
    for name, target in ((b'rel-link', b'file.txt'), (b'abs-link', b'/etc/passwd'),
                         (b'dangling', b'does/not/exist'), (b'outside-dir-link', os.fsencode(outside))):
        assert os.path.islink(j(d, name)), name
        assert os.readlink(j(d, name)) == target
    # The directory behind outside-dir-link was not descended into.
    assert os.listdir(os.fsencode(outside)) == [b'marker']
    assert not any(b'marker' in files for _p, _d, files in os.walk(d))
    # Hard links: one inode, three names.
    inodes = {os.lstat(j(d, p)).st_ino for p in (b'hard1', b'sub dir/hard2', b'hard3')}
    assert len(inodes) == 1
    assert os.lstat(j(d, b'hard1')).st_nlink == 3
    # xattrs and ACLs, compared with the tools.
    for rel in (b'file.txt', b'sub dir', b'acl-dir'):
        assert xattr_dump(j(d, rel)) == xattr_dump(j(s, rel)), rel
        assert acl_dump(j(d, rel)) == acl_dump(j(s, rel)), rel
    assert b'user:1234:rw-' in acl_dump(j(d, b'file.txt'))
    assert b'default:user:1234:r-x' in acl_dump(j(d, b'acl-dir'))
    # Sparse stays sparse (64 MiB apparent, two 4 KiB islands).
    st = os.lstat(j(d, b'sparse.img'))
    assert st.st_size == 64 << 20
    assert st.st_blocks * 512 < 1 << 20, 'sparse file was filled: %d bytes allocated' % (st.st_blocks * 512)
    # Empty file, specials, owners, modes.
    assert os.lstat(j(d, b'empty')).st_size == 0
    assert stat.S_ISFIFO(os.lstat(j(d, b'fifo')).st_mode)
    dev = os.lstat(j(d, b'null-dev'))
    assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)
    owned = os.lstat(j(d, b'owned'))
    assert (owned.st_uid, owned.st_gid) == (1234, 5678)
    assert stat.S_IMODE(os.lstat(j(d, b'suid')).st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(j(d, b'sgid-dir')).st_mode) == 0o2775
    # Nanosecond mtimes of every file, symlink and directory, the root included.
    for dirpath, dirnames, filenames in os.walk(s):
        for name in dirnames + filenames + [b'']:
            sp = j(dirpath, name) if name else dirpath
            dp = j(d, os.path.relpath(sp, s)) if sp != s else d
            assert os.lstat(dp).st_mtime_ns == os.lstat(sp).st_mtime_ns, sp
    # Names that are not UTF-8, or hold whitespace, came through byte for byte.
    for key in ('newline', 'tab', 'latin1', 'baddir'):
        assert os.path.lexists(j(d, NAMES[key])), NAMES[key]
    assert os.path.exists(j(d, b'sub dir', NAMES['space']))
    assert os.path.exists(j(d, NAMES['baddir'], b'inner'))
    # Content of every regular file (cmp).
    for dirpath, _dirnames, filenames in os.walk(s):
        for name in filenames:
            sp = j(dirpath, name)
            if os.path.isfile(sp) and not os.path.islink(sp):
                assert same_content(sp, j(d, os.path.relpath(sp, s))), sp


# ---------------------------------------------------------------- ansible batches

def run_tasks(tasks, check=False, timeout=600):
    """Run TASKS (a list of task dicts) in one ansible-playbook process on localhost and
    return one (status, result) per task run, in order.  JSON is YAML, so the playbook is
    written as JSON."""
    play = [{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]
    with tempfile.NamedTemporaryFile('r', prefix='fslinks-batch-', suffix='.jsonl') as out:
        proc = _ansible.run_playbook(
            json.dumps(play, indent=1) + '\n', check=check, timeout=timeout,
            env={'ANSIBLE_LOAD_CALLBACK_PLUGINS': '1',
                 'ANSIBLE_CALLBACK_PLUGINS': str(TESTS / 'callback_plugins'),
                 'ANSIBLE_STDOUT_CALLBACK': 'fslinks_test_result',
                 'FSLINKS_TEST_RESULT_FILE': out.name})
        lines = [json.loads(line) for line in out.read().splitlines() if line.strip()]
    if not lines:
        raise _ansible.AnsibleRunError('ansible-playbook gave no result', proc)
    return [(line['status'], line['result']) for line in lines]


# ---------------------------------------------------------------- running as nobody

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
    if not shutil.which('setpriv'):
        pytest.skip('setpriv (util-linux) is needed to run the engine unprivileged')
    proc = subprocess.run(
        ['setpriv', '--reuid=%d' % uid, '--regid=%d' % gid, '--clear-groups', '--inh-caps=-all',
         sys.executable, '-c', _NOBODY_SCRIPT, str(ROOT / '.collections'), str(src), str(dest)],
        capture_output=True, text=True, check=False, cwd='/')
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
