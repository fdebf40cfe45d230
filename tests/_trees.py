# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test trees that exercise every corner rsync -aHAX preserves, and oracles to compare trees.

make_hostile_tree(root)      build the tree (needs root: mknod, chown); returns a HostileTree
                             with the notable paths (sparse file, hard links, ...)
make_many_files(root, n)     a plain tree of N small files (kill tests, timing)
rsync_diff(src, dest)        lines of `rsync -aHAXn --checksum -i --numeric-ids` (empty = equal)
assert_same_tree(src, dest)  rsync oracle plus a Python walk comparing nanosecond times, owners,
                             modes and the hard-link structure
copy_reference(src, dest)    a reference copy (cp -a) of SRC as it is now
remove_tree(path)            rm -rf that also deletes (read-only) btrfs subvolumes
tree_state(root)             {relpath: (type, mode, uid, gid, size, mtime_ns, target/rdev, xattrs)}
                             to prove a tree did not change
"""

from __future__ import annotations

import os
import re
import stat
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DEEP_LEVELS = 60
SPARSE_SIZE = 16 << 20          # 16 MiB apparent size ...
SPARSE_DATA = [(0, b'head' * 1024), (5 << 20, b'middle' * 700), (SPARSE_SIZE - 4096, b't' * 4096)]

# Names that break naive tools: newline, invalid UTF-8, spaces, leading dash, glob characters.
ODD_NAMES = [
    b'with space.txt',
    b'new\nline',
    b'bad-\xff\xfe-utf8',
    b'-leading-dash',
    b'star*and?[brackets]',
    b'back\\slash',
    b'tab\there',
    'ünïcødé-✓'.encode(),
    b'n' * 255,                  # NAME_MAX
]


@dataclass
class HostileTree:
    root: Path
    sparse: Path = None
    hardlinks: list = field(default_factory=list)
    deep_file: Path = None
    files: int = 0          # regular file names (hard-linked names each count)


def _b(path):
    return os.fsencode(path)


def _write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def _setfacl(args, path):
    subprocess.run(['setfacl'] + args + ['--', os.fsdecode(path)], check=True, capture_output=True)


def make_hostile_tree(root: Path) -> HostileTree:
    """Fill ROOT (an existing empty directory) with a tree rsync -aHAX must copy exactly.

    Needs root privileges (device nodes, chown).  Every entry's mtime (also directories',
    and symlinks' own) is set with a distinct nanosecond part, directories last.
    """
    root = Path(root)
    r = _b(root)
    tree = HostileTree(root=root)
    j = os.path.join

    _write(j(r, b'plain.txt'), b'hello world\n')
    _write(j(r, b'empty'), b'')
    _write(j(r, b'random.bin'), os.urandom(300 * 1024))
    for i, name in enumerate(ODD_NAMES):
        _write(j(r, name), b'odd name %d\n' % i)
    os.mkdir(j(r, b'dir with\nnewline \xff'))
    _write(j(r, b'dir with\nnewline \xff', b'inside'), b'inside an odd directory\n')

    # Modes: set-id bits, sticky directory, no permissions at all, read-only directory.
    _write(j(r, b'setuid'), b'#!/bin/sh\n', 0o4755)
    _write(j(r, b'setgid'), b'#!/bin/sh\n', 0o2711)
    _write(j(r, b'noperm'), b'secret\n', 0o000)
    os.mkdir(j(r, b'sticky'))
    os.chmod(j(r, b'sticky'), 0o1777)
    os.mkdir(j(r, b'readonly-dir'))
    _write(j(r, b'readonly-dir', b'file'), b'in a 0555 directory\n')
    os.mkdir(j(r, b'setgid-dir'))
    os.chmod(j(r, b'setgid-dir'), 0o2775)

    # Odd owners (numeric ids that exist nowhere), also on a symlink and a directory.
    _write(j(r, b'owned'), b'owned by 1234:5678\n', 0o640)
    os.chown(j(r, b'owned'), 1234, 5678)
    os.mkdir(j(r, b'owned-dir'), 0o750)
    os.chown(j(r, b'owned-dir'), 4321, 8765)
    # chown clears set-id bits: set the mode again after it.
    _write(j(r, b'owned-setuid'), b'x\n', 0o755)
    os.chown(j(r, b'owned-setuid'), 1234, 5678)
    os.chmod(j(r, b'owned-setuid'), 0o6755)

    # Sparse file: 16 MiB apparent, a few KiB of data.
    sparse = j(r, b'sparse.img')
    fd = os.open(sparse, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for off, data in SPARSE_DATA:
            os.pwrite(fd, data, off)
        os.ftruncate(fd, SPARSE_SIZE)
    finally:
        os.close(fd)
    tree.sparse = root / 'sparse.img'
    # A file that is all hole.
    with open(j(r, b'all-hole'), 'wb') as f:
        f.truncate(1 << 20)

    # Inner hard links: three names of one inode in different dirs, one with an odd name.
    os.mkdir(j(r, b'hard'))
    os.mkdir(j(r, b'hard2'))
    first = j(r, b'hard', b'a')
    _write(first, b'one inode, three names\n', 0o600)
    os.link(first, j(r, b'hard', b'b'))
    os.link(first, j(r, b'hard2', b'c\nnl'))
    _write(j(r, b'hard', b'pair1'), b'two names\n')
    os.link(j(r, b'hard', b'pair1'), j(r, b'hard2', b'pair2'))
    tree.hardlinks = [root / 'hard' / 'a', root / 'hard' / 'b', Path(os.fsdecode(j(r, b'hard2', b'c\nnl')))]

    # Symlinks: dangling, relative, absolute, to a directory, odd target bytes, owned.
    os.mkdir(j(r, b'links'))
    os.symlink(b'does/not/exist', j(r, b'links', b'dangling'))
    os.symlink(b'../plain.txt', j(r, b'links', b'relative'))
    os.symlink(b'/etc/passwd', j(r, b'links', b'absolute'))
    os.symlink(b'../hard', j(r, b'links', b'to-dir'))
    os.symlink(b'tar\nget \xff', j(r, b'links', b'odd-target'))
    os.symlink(b'../plain.txt', j(r, b'links', b'owned-link'))
    os.lchown(j(r, b'links', b'owned-link'), 1234, 5678)

    # Specials: fifo, character and block device nodes.
    os.mkdir(j(r, b'dev'))
    os.mkfifo(j(r, b'dev', b'fifo'), 0o620)
    os.mknod(j(r, b'dev', b'null-like'), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(j(r, b'dev', b'blockdev'), stat.S_IFBLK | 0o660, os.makedev(7, 250))
    os.chown(j(r, b'dev', b'blockdev'), 0, 6)
    os.mknod(j(r, b'dev', b'socket'), stat.S_IFSOCK | 0o755)

    # ACLs (access on a file, access + default on a directory) and user xattrs.
    _write(j(r, b'acl.txt'), b'acl\n', 0o640)
    _setfacl(['-m', 'u:1234:rw-,g:5678:r--,m::rw-'], j(r, b'acl.txt'))
    os.mkdir(j(r, b'acl-dir'))
    _setfacl(['-m', 'u:1234:rwx', '-d', '-m', 'u:1234:r-x,g::r-x'], j(r, b'acl-dir'))
    _write(j(r, b'acl-dir', b'inherits'), b'default acl applies\n', 0o644)
    _write(j(r, b'xattr.txt'), b'xattrs\n')
    os.setxattr(j(r, b'xattr.txt'), b'user.text', b'value')
    os.setxattr(j(r, b'xattr.txt'), b'user.binary', b'\x00\x01\xff\n')
    os.setxattr(j(r, b'xattr.txt'), b'user.empty', b'')
    os.setxattr(j(r, b'links'), b'user.on-dir', b'dir attr')
    os.setxattr(r, b'user.on-root', b'the root directory has xattrs too')
    # Root-only namespaces: trusted.* (also on a symlink) and a file capability
    # (security.capability, cap_net_bind_service+ep), which a chown after it would clear.
    os.setxattr(j(r, b'xattr.txt'), b'trusted.secret', b'only root sees this')
    os.setxattr(j(r, b'links', b'relative'), b'trusted.on-symlink', b'link attr', follow_symlinks=False)
    _write(j(r, b'capable'), b'#!/bin/sh\n', 0o755)
    os.chown(j(r, b'capable'), 1234, 5678)
    os.setxattr(j(r, b'capable'), b'security.capability',
                struct.pack('<IIIII', 0x02000001, 1 << 10, 0, 0, 0))
    # (user.* xattrs are allowed on regular files and directories only.)

    # Deep path: 60 nested directories, a file at the bottom.
    deep = j(r, b'deep')
    os.mkdir(deep)
    for i in range(DEEP_LEVELS):
        deep = j(deep, b'level-%02d' % i)
        os.mkdir(deep)
    _write(j(deep, b'bottom.txt'), b'60 levels down\n')
    tree.deep_file = Path(os.fsdecode(j(deep, b'bottom.txt')))

    # Nanosecond mtimes everywhere, directories bottom-up last (creating entries moves them).
    base = 1_700_000_000
    n = 0
    for dirpath, dirnames, filenames in os.walk(r, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(j(dirpath, d))]:
            n += 1
            os.utime(j(dirpath, name), ns=(base * 10**9 + 7, (base + n) * 10**9 + n * 1_001 + 123),
                     follow_symlinks=False)
        for name in dirnames:
            p = j(dirpath, name)
            if not os.path.islink(p):
                n += 1
                os.utime(p, ns=(base * 10**9 + 9, (base + n) * 10**9 + n * 997 + 456))
    os.utime(r, ns=(base * 10**9, base * 10**9 + 987_654_321))
    os.chmod(j(r, b'readonly-dir'), 0o555)
    # chmod does not touch mtime, but keep the promise explicit.
    os.utime(j(r, b'readonly-dir'), ns=(base * 10**9, (base + 5000) * 10**9 + 5), follow_symlinks=False)
    tree.files = sum(1 for d, _dirs, files in os.walk(r) for f in files if stat.S_ISREG(os.lstat(j(d, f)).st_mode))
    return tree


def make_many_files(root: Path, count: int, size: int = 1024, per_dir: int = 100):
    """COUNT files of SIZE bytes (distinct content) in directories of PER_DIR files."""
    root = Path(root)
    for i in range(count):
        d = root / ('d%03d' % (i // per_dir))
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / ('f%05d' % i)).write_bytes((b'%08d' % i) * (size // 8))


# ---------------------------------------------------------------- oracles

RSYNC = ['rsync', '-aHAXn', '--checksum', '--itemize-changes', '--numeric-ids']


def rsync_diff(src, dest, nanoseconds=True, extra=()):
    """What rsync -aHAX would still change to make DEST like SRC: [] when equal.

    rsync compares mtimes to the second by default; ``--modify-window=-1`` makes it compare
    nanoseconds too.  EXTRA: more rsync options (``--exclude=...``, ``--delete``).
    """
    argv = list(RSYNC) + (['--modify-window=-1'] if nanoseconds else []) + list(extra)
    proc = subprocess.run(argv + [os.fsencode(src).rstrip(b'/') + b'/', os.fsencode(dest).rstrip(b'/') + b'/'],
                          capture_output=True, check=False)
    assert proc.returncode == 0, 'rsync failed (%d): %r' % (proc.returncode, proc.stderr)
    return [line for line in proc.stdout.split(b'\n') if line]


def tree_state(root, with_atime=False):
    """Everything rsync -aHAX preserves about every entry below ROOT, keyed by relative path
    (bytes), plus inode groups: for 'did this old snapshot change?' checks."""
    root = _b(root)
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
    src, dest = _b(src), _b(dest)
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
    root = _b(root)
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
    assert diff == [], 'rsync -aHAXn --checksum -i %s/ %s/ reports:\n%s' % (
        src, dest, b'\n'.join(diff).decode('utf-8', 'backslashreplace'))
    bad = nanosecond_diff(src, dest)
    assert bad == [], bad
    assert link_groups(src) == link_groups(dest), 'hard links differ'


def copy_reference(src, dest):
    """A reference copy of SRC at DEST (the 'src state at that time'), made by cp -a, which keeps
    modes, owners, nanosecond times, xattrs, ACLs and inner hard links.  (Not rsync: rsync 3.5.0
    here sometimes leaves a directory's mtime at the copy time.)"""
    subprocess.run(['cp', '-a', '--sparse=always', '--no-target-directory', os.fsencode(src), os.fsencode(dest)],
                   check=True, capture_output=True)


def remove_tree(path):
    """rm -rf for test work dirs: copes with odd names and with (read-only) btrfs subvolumes
    below PATH, which rmdir cannot remove. Never crosses into other mounted filesystems."""
    path = _b(path)
    if not os.path.lexists(path):
        return
    top = os.lstat(path)
    subvols = []
    if stat.S_ISDIR(top.st_mode):
        mounts = _mount_points()
        for dirpath, dirnames, _files in os.walk(path):
            keep = []
            for d in dirnames:
                p = os.path.join(dirpath, d)
                try:
                    st = os.lstat(p)
                    if os.path.realpath(p) in mounts:
                        continue
                except OSError:          # deeper than PATH_MAX: rm -rf copes with it below
                    continue
                if stat.S_ISDIR(st.st_mode) and st.st_ino == 256:
                    subvols.append(p)
                keep.append(d)
            dirnames[:] = keep
        if top.st_ino == 256 and path not in mounts:
            subvols.insert(0, path)
    for sub in reversed(subvols):    # deepest first
        subprocess.run(['btrfs', 'property', 'set', '-ts', sub, 'ro', 'false'], capture_output=True, check=False)
        subprocess.run(['btrfs', 'subvolume', 'delete', sub], capture_output=True, check=False)
    if os.path.lexists(path):
        subprocess.run(['rm', '-rf', '--one-file-system', path], check=False)


def _mount_points():
    out = set()
    with open('/proc/self/mountinfo', 'rb') as f:
        for line in f:
            mp = line.split()[4]
            out.add(re.sub(rb'\\([0-7]{3})', lambda m: bytes([int(m.group(1), 8)]), mp))
    return out
