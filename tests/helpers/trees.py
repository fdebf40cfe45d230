# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Building test trees, and removing them.

make_hostile_tree(root)      the one rich tree: every corner rsync -aHAX preserves (needs root:
                             mknod, chown); returns a HostileTree with the notable paths
make_many_files(root, n)     N plain small files with distinct content (kill tests, timing, ENOSPC)
mutate(root, rng)            change, delete and add some of those files
write(path, data)            one file with an optional mode and nanosecond mtime
copy_reference(src, dest)    a reference copy (cp -a) of SRC as it is now
create_subvolume(path)       a btrfs subvolume
remove_tree(path)            rm -rf that also deletes (read-only) btrfs subvolumes

The oracles that compare trees are in helpers.oracles.
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


# A base for nanosecond timestamps: odd nanoseconds, so that a copy made with
# microsecond or second precision shows.
NS = 1_600_000_000_123_456_789


@dataclass
class HostileTree:
    root: Path
    sparse: Path = None
    hardlinks: list = field(default_factory=list)
    deep_file: Path = None
    files: int = 0          # regular file names (hard-linked names each count)
    outside: Path = None    # what links/outside-dir points at (make_hostile_tree(root, outside))


def _b(path):
    return os.fsencode(path)


def _write(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def write(path, data, mtime_ns=None, mode=None):
    """Write DATA to PATH (str, bytes or Path); set MODE and the mtime (nanoseconds) if given."""
    path = os.fsencode(path)
    with open(path, 'wb') as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def data(size):
    """SIZE bytes of random (incompressible) data."""
    return os.urandom(size)


def _setfacl(args, path):
    subprocess.run(['setfacl'] + args + ['--', os.fsdecode(path)], check=True, capture_output=True)


def write_sparse(path, size, regions, mode=0o600):
    """A file of apparent size SIZE with data only at REGIONS [(offset, bytes)], holes elsewhere."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        for off, chunk in regions:
            os.pwrite(fd, chunk, off)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def make_hostile_tree(root: Path, outside: Path = None) -> HostileTree:
    """Fill ROOT (made if missing, else an empty directory) with a tree rsync -aHAX must copy
    exactly.  OUTSIDE: an existing directory outside ROOT; if given, it gets a file 'marker' and
    links/outside-dir points at it (a copy must keep the symlink and never descend into it).

    Needs root privileges (device nodes, chown).  Every entry's mtime (also directories',
    and symlinks' own) is set with a distinct nanosecond part, directories last.
    """
    root = Path(root)
    r = _b(root)
    os.makedirs(r, exist_ok=True)
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
    write_sparse(j(r, b'sparse.img'), SPARSE_SIZE, SPARSE_DATA)
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
    if outside is not None:
        tree.outside = Path(outside)
        _write(j(_b(outside), b'marker'), b'outside the tree\n')
        os.symlink(_b(outside), j(r, b'links', b'outside-dir'))

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


def make_many_files(root: Path, count: int, size: int = 1024, per_dir: int = 100, rng=None):
    """COUNT files of SIZE bytes with distinct content (each starts with its number) in
    directories of PER_DIR files below ROOT (made if missing).  Without RNG the rest of each
    file repeats its number (cheap, reproducible); with RNG (a random.Random) it is random
    bytes from it, so that replaying a seed replays the tree."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        d = root / ('d%03d' % (i // per_dir))
        if i % per_dir == 0:
            d.mkdir(exist_ok=True)
        head = b'%08d' % i
        body = rng.randbytes(max(0, size - 8)) if rng is not None else head * (size // 8 - 1)
        (d / ('f%05d' % i)).write_bytes(head + body)


def mutate(root, rng, fraction=0.05):
    """Change a fraction of the files (new data, new mtime), delete a few, add a few."""
    root = Path(root)
    files = sorted(p for p in root.rglob('f*') if p.is_file())
    if not files:
        return
    for p in rng.sample(files, max(1, int(len(files) * fraction))):
        p.write_bytes(rng.randbytes(rng.randint(0, 8192)))
    for p in rng.sample(files, max(1, int(len(files) * fraction / 4))):
        if p.exists():
            p.unlink()
    d = root / ('new-%08x' % rng.getrandbits(32))
    d.mkdir()
    for i in range(rng.randint(1, 20)):
        (d / ('f-new-%d' % i)).write_bytes(rng.randbytes(rng.randint(0, 4096)))


def copy_reference(src, dest):
    """A reference copy of SRC at DEST (the 'src state at that time'), made by cp -a, which keeps
    modes, owners, nanosecond times, xattrs, ACLs and inner hard links; returns DEST as a Path.
    (Not rsync: rsync 3.5.0 here sometimes leaves a directory's mtime at the copy time.)"""
    subprocess.run(['cp', '-a', '--sparse=always', '--no-target-directory', os.fsencode(src), os.fsencode(dest)],
                   check=True, capture_output=True)
    return Path(dest)


def create_subvolume(path):
    subprocess.run(['btrfs', 'subvolume', 'create', str(path)], check=True, capture_output=True)
    return Path(path)


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
