# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Oracles: ways to compare and fingerprint trees that do not go through the engine's own
comparison code (rsync, cmp, os.walk, getfattr/getfacl, filefrag; FIEMAP through _extents is
the one exception, checked against filefrag in the tests).

rsync_diff(src, dest)          what rsync -aHAX --checksum would still change ([] = equal)
assert_same_tree(src, dest)    rsync_diff, plus a walk comparing nanosecond times, owners,
                               modes and the hard-link structure
check_hostile_copy(tree, dest) assert_same_tree and the details of make_hostile_tree, one by one
tree_problems(ref, snapshot)   assert_same_tree's checks as a list of texts (for tallies)
tree_state(root), state(path)  fingerprints: equal before and after = untouched
temp_leftovers(directory)      the engine's temporary names (.NAME.fslinks-*) below DIRECTORY
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import zlib

from ansible_collections.fslinks.snapshots.plugins.module_utils import _extents

from .trees import ODD_NAMES, SPARSE_SIZE

# ---------------------------------------------------------------- rsync and walks

# XFS shows root each ACL twice, as system.posix_acl_* (compared by -A) and as its internal
# trusted.SGI_ACL_*: a tree on XFS has the second, the same tree elsewhere not; not a difference.
RSYNC = ['rsync', '-aHAXn', '--checksum', '--itemize-changes', '--numeric-ids', '--modify-window=-1',
         '--filter=-x trusted.SGI_ACL_*']


def rsync_diff(src, dest, extra=()):
    """What rsync -aHAX --numeric-ids would still change to make DEST like SRC: [] when equal,
    else rsync's itemized lines (text; bytes that are not UTF-8 shown as \\xNN).

    --checksum, always: rsync's default quick check skips a file whose size and mtime match,
    so a copy with the right size and times but the wrong bytes (a botched clone, a write that
    went through a hard link into an old snapshot) would pass; an oracle must read the data.
    Test trees are small, so reading them costs little.  --modify-window=-1 makes rsync
    compare mtimes to the nanosecond (its default is to the second).
    EXTRA: more rsync options (``--exclude=...``, ``--delete``).
    """
    argv = RSYNC + list(extra) + [os.fsencode(src).rstrip(b'/') + b'/', os.fsencode(dest).rstrip(b'/') + b'/']
    proc = subprocess.run(argv, capture_output=True, check=False)
    assert proc.returncode == 0, 'rsync failed (%d): %s' % (proc.returncode, proc.stderr.decode('utf-8', 'replace'))
    return [line for line in proc.stdout.decode('utf-8', 'backslashreplace').split('\n') if line]


def tree_state(root):
    """Everything rsync -aHAX preserves about every entry below ROOT, keyed by relative path
    (bytes), plus inode groups: for 'did this old snapshot change?' checks."""
    root = os.fsencode(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            out[rel] = entry_state(p)
    out[b'.'] = entry_state(root)
    return out


def entry_state(p):
    st = os.lstat(p)
    kind = stat.S_IFMT(st.st_mode)
    extra = None
    if stat.S_ISLNK(st.st_mode):
        extra = os.readlink(p)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        extra = st.st_rdev
    elif stat.S_ISREG(st.st_mode):
        with open(p, 'rb') as f:
            extra = hash(f.read())
    xattrs = {}
    if not stat.S_ISLNK(st.st_mode):
        try:
            xattrs = {n: os.getxattr(p, n, follow_symlinks=False) for n in os.listxattr(p, follow_symlinks=False)}
        except OSError:
            xattrs = None
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size if kind == stat.S_IFREG else None,
            st.st_mtime_ns, extra, tuple(sorted(xattrs.items())) if xattrs else ())


def nanosecond_diff(src, dest):
    """Relative paths whose mtime (to the nanosecond) or owner differs between SRC and DEST,
    checked by a plain walk (independent of rsync)."""
    src, dest = os.fsencode(src), os.fsencode(dest)
    bad = []
    for dirpath, dirnames, filenames in os.walk(src):
        for name in [None] + dirnames + filenames:
            p = dirpath if name is None else os.path.join(dirpath, name)
            rel = os.path.relpath(p, src)
            a = os.lstat(p)
            try:
                b = os.lstat(os.path.join(dest, rel))
            except FileNotFoundError:
                bad.append((rel, 'missing'))
                continue
            if a.st_mtime_ns != b.st_mtime_ns:
                bad.append((rel, 'mtime', a.st_mtime_ns, b.st_mtime_ns))
            if (a.st_uid, a.st_gid, a.st_mode) != (b.st_uid, b.st_gid, b.st_mode):
                bad.append((rel, 'owner/mode', (a.st_uid, a.st_gid, oct(a.st_mode)), (b.st_uid, b.st_gid, oct(b.st_mode))))
    return bad


def link_groups(root):
    """The hard-link structure inside ROOT: a set of frozensets of relative paths (bytes) that
    are one inode (only groups of two names or more).  Links to inodes outside ROOT (a previous
    snapshot) do not count."""
    root = os.fsencode(root)
    by_inode = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                by_inode.setdefault((st.st_dev, st.st_ino), []).append(os.path.relpath(p, root))
    return {frozenset(names) for names in by_inode.values() if len(names) > 1}


def assert_same_tree(src, dest):
    """DEST is what rsync -aHAX --numeric-ids makes of SRC: rsync has nothing to do (comparing
    checksums and nanosecond mtimes), a walk agrees, and the hard links inside are the same
    (rsync -n does not notice names that are linked in DEST but not in SRC)."""
    diff = rsync_diff(src, dest)
    assert diff == [], 'rsync -aHAXn --checksum -i %s/ %s/ reports:\n%s' % (src, dest, '\n'.join(diff))
    bad = nanosecond_diff(src, dest)
    assert bad == [], bad
    assert link_groups(src) == link_groups(dest), 'hard links differ'


def tree_problems(reference, snapshot):
    """[] when SNAPSHOT is what rsync -aHAX makes of REFERENCE (checksums, nanosecond times,
    owners, modes), else the differences as text."""
    problems = []
    diff = rsync_diff(reference, snapshot)
    if diff:
        problems.append('%s differs from its source (rsync -aHAXn --checksum): %s' % (
            os.path.basename(str(snapshot)), '; '.join(diff[:5])))
    bad = nanosecond_diff(reference, snapshot)
    if bad:
        problems.append('%s: times/owners differ: %r' % (os.path.basename(str(snapshot)), bad[:3]))
    return problems


def regular_files(root):
    """Relative paths (bytes) of the regular files below ROOT."""
    root = os.fsencode(root)
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return sorted(out)


def count_entries(root, limit=None):
    """Entries below ROOT (not following symlinks); stops counting at LIMIT."""
    n = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        n += len(dirnames) + len(filenames)
        if limit and n >= limit:
            break
    return n


def inodes_of(root):
    """{inode} of the regular files below ROOT."""
    out = set()
    for dirpath, _dirs, files in os.walk(os.fsencode(root)):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                out.add(st.st_ino)
    return out


def linked_outside(snapshot, published_inodes):
    """Files of SNAPSHOT with more than one link whose inode is in no published snapshot
    (the hardlink method may link only to the previous published snapshot)."""
    bad = []
    for dirpath, _dirs, files in os.walk(os.fsencode(snapshot)):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and st.st_ino not in published_inodes:
                bad.append(p)
    return bad


def is_readonly_subvolume(path):
    out = subprocess.run(['btrfs', 'property', 'get', '-ts', str(path), 'ro'], check=True,
                         capture_output=True, text=True).stdout
    return out.strip() == 'ro=true'


# ---------------------------------------------------------------- content and extents

def sha(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def crc(path):
    with open(path, 'rb') as f:
        return zlib.crc32(f.read())


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


# ---------------------------------------------------------------- fingerprints and leftovers

def temp_leftovers(directory):
    """The engine's temporary names (.NAME.fslinks-*) anywhere below DIRECTORY.  (For what a
    snapshot root may hold after a killed run, see helpers.snapshots.leftovers.)"""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(directory)):
        for name in dirnames + filenames:
            if name.startswith(b'.') and b'.fslinks-' in name:
                found.append(os.path.join(dirpath, name))
    return found


def state(path):
    """A fingerprint of path (file or tree, not following symlinks): inode, type, mode,
    owner, size, mtime, link count and content of every entry.  Equal before and after =
    untouched (unlike tree_state, the same inodes too)."""
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
    return [line for line in out.splitlines()
            if line and not line.startswith((b'# file:', b'trusted.SGI_ACL_'))]    # (see RSYNC)


def acl_dump(path):
    return subprocess.run(['getfacl', '-p', '--omit-header', os.fsencode(path)],
                          capture_output=True, check=True).stdout


# ---------------------------------------------------------------- the hostile tree, in detail

def check_hostile_copy(tree, dest):
    """DEST is an exact copy of TREE (a make_hostile_tree result): assert_same_tree, then each
    corner checked on its own with other tools, so that a blind spot of rsync or of the walk
    (both compare through the same kernel interfaces) does not hide a loss."""
    s, d = os.fsencode(tree.root), os.fsencode(dest)
    j = os.path.join
    assert_same_tree(s, d)
    # Symlinks are symlinks with the same target, never followed.
    targets = {b'links/dangling': b'does/not/exist', b'links/relative': b'../plain.txt',
               b'links/absolute': b'/etc/passwd', b'links/to-dir': b'../hard',
               b'links/odd-target': b'tar\nget \xff'}
    if tree.outside is not None:
        targets[b'links/outside-dir'] = os.fsencode(tree.outside)
        # The directory behind it was not descended into, nor written to.
        assert os.listdir(os.fsencode(tree.outside)) == [b'marker']
        assert not any(b'marker' in files for _p, _d, files in os.walk(d))
    for name, target in targets.items():
        assert os.path.islink(j(d, name)), name
        assert os.readlink(j(d, name)) == target, name
    # Hard links: one inode, three names (one of them odd), and a pair.
    inodes = {os.lstat(j(d, p)).st_ino for p in (b'hard/a', b'hard/b', b'hard2/c\nnl')}
    assert len(inodes) == 1
    assert os.lstat(j(d, b'hard/a')).st_nlink == 3
    assert os.lstat(j(d, b'hard/pair1')).st_ino == os.lstat(j(d, b'hard2/pair2')).st_ino
    # xattrs (user, trusted, security.capability) and ACLs, compared with the tools.
    for rel in (b'xattr.txt', b'links', b'links/relative', b'acl.txt', b'acl-dir', b'acl-dir/inherits', b'capable'):
        assert xattr_dump(j(d, rel)) == xattr_dump(j(s, rel)), rel
        assert acl_dump(j(d, rel)) == acl_dump(j(s, rel)), rel
    assert xattr_dump(d) == xattr_dump(s)
    assert b'user:1234:rw-' in acl_dump(j(d, b'acl.txt'))
    assert b'default:user:1234:r-x' in acl_dump(j(d, b'acl-dir'))
    assert os.getxattr(j(d, b'xattr.txt'), b'user.binary') == b'\x00\x01\xff\n'
    assert 'security.capability' in os.listxattr(j(d, b'capable'))
    # Sparse files stay sparse.
    st = os.lstat(j(d, b'sparse.img'))
    assert st.st_size == SPARSE_SIZE
    assert st.st_blocks * 512 < 1 << 20, 'sparse file was filled: %d bytes allocated' % (st.st_blocks * 512)
    hole = os.lstat(j(d, b'all-hole'))
    assert hole.st_size == 1 << 20 and hole.st_blocks * 512 < 64 << 10, hole
    # Empty file, specials, owners, modes.
    assert os.lstat(j(d, b'empty')).st_size == 0
    assert stat.S_ISFIFO(os.lstat(j(d, b'dev/fifo')).st_mode)
    assert stat.S_ISSOCK(os.lstat(j(d, b'dev/socket')).st_mode)
    dev = os.lstat(j(d, b'dev/null-like'))
    assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)
    blk = os.lstat(j(d, b'dev/blockdev'))
    assert stat.S_ISBLK(blk.st_mode) and blk.st_rdev == os.makedev(7, 250)
    owned = os.lstat(j(d, b'owned'))
    assert (owned.st_uid, owned.st_gid) == (1234, 5678)
    link = os.lstat(j(d, b'links/owned-link'))
    assert (link.st_uid, link.st_gid) == (1234, 5678)
    modes = {b'setuid': 0o4755, b'setgid': 0o2711, b'noperm': 0o000, b'sticky': 0o1777,
             b'readonly-dir': 0o555, b'setgid-dir': 0o2775, b'owned-setuid': 0o6755}
    for rel, mode in modes.items():
        assert stat.S_IMODE(os.lstat(j(d, rel)).st_mode) == mode, rel
    # Names that are not UTF-8, hold whitespace or glob characters, or are NAME_MAX long came
    # through byte for byte, and so did a path 60 directories deep.
    for name in ODD_NAMES:
        assert os.path.lexists(j(d, name)), name
    assert os.path.exists(j(d, b'dir with\nnewline \xff', b'inside'))
    assert os.path.exists(j(d, os.path.relpath(os.fsencode(tree.deep_file), s)))
    # Content of every regular file (cmp), and as many of them as in the source.
    files = regular_files(s)
    assert len(files) == tree.files and regular_files(d) == files
    for rel in files:
        assert same_content(j(s, rel), j(d, rel)), rel
