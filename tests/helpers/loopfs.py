# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loopback filesystems for tests: make one, mount it, and always unmount and detach it.

Standalone on purpose (no imports from this package): bench/_common.py loads this file by path."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

MKFS = {
    'ext4': ['mkfs.ext4', '-q', '-F'],
    'xfs': ['mkfs.xfs', '-q', '-f', '-m', 'reflink=1'],
    'btrfs': ['mkfs.btrfs', '-q', '-f'],
}
_SBIN = os.pathsep.join(['/usr/local/sbin', '/usr/sbin', '/sbin'])


class LazyUnmountWarning(UserWarning):
    """A test filesystem was still busy at teardown and had to be detached lazily."""


class LoopFsUnavailable(Exception):
    """This machine cannot make loop filesystems of the requested kind (a prerequisite is missing)."""


def _which(cmd):
    # mkfs.* and losetup live in sbin, which a non-root PATH may lack.
    return shutil.which(cmd) or shutil.which(cmd, path=_SBIN)


def _run(argv):
    argv = [_which(argv[0]) or argv[0]] + list(argv[1:])
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def check_prerequisites(kind):
    """Raise LoopFsUnavailable with a clear reason if loop filesystems of KIND cannot be made."""
    if kind not in MKFS:
        raise ValueError('unknown filesystem kind %r (known: %s)' % (kind, ', '.join(sorted(MKFS))))
    if os.geteuid() != 0:
        raise LoopFsUnavailable('loop filesystems need root (mount, losetup)')
    if not os.path.exists('/dev/loop-control'):
        raise LoopFsUnavailable('no /dev/loop-control: the kernel has no loop device support here')
    for cmd in (MKFS[kind][0], 'losetup', 'mount', 'umount'):
        if not _which(cmd):
            raise LoopFsUnavailable('%s not found (run scripts/setup.sh to install it)' % cmd)


def parse_size(size):
    """'256M' / '1G' / 4096 -> bytes."""
    if isinstance(size, int):
        return size
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    size = size.strip().upper()
    if size[-1:] in units:
        return int(size[:-1]) * units[size[-1]]
    return int(size)


def is_mountpoint(path):
    """True if PATH is listed as a mount point in /proc/self/mounts."""
    return fstype_of(path) is not None


def fstype_of(path):
    """The fstype of the mount whose mount point is exactly PATH, or None."""
    target = os.path.realpath(path)
    found = None
    with open('/proc/self/mounts', encoding='utf-8') as f:
        for line in f:
            fields = line.split()
            # Mount points escape space, tab, newline and backslash as octal (\040 ...).
            mnt = re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), fields[1])
            if mnt == target:
                found = fields[2]  # the last one listed is the one on top
    return found


def loop_devices_for(image):
    """Loop devices currently backed by IMAGE (``losetup -j``)."""
    out = _run(['losetup', '-n', '-O', 'NAME', '-j', str(image)])
    return [line.strip() for line in out.splitlines() if line.strip()]


def unmount(path, tries=10):
    """Unmount PATH; retry while busy, then detach it lazily so teardown never hangs."""
    for _attempt in range(tries):
        if not is_mountpoint(path):
            return
        if subprocess.run([_which('umount'), str(path)], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)
    # Still busy: something holds a file or cwd there (often a leaked fd in the code under test).
    warnings.warn('%s still busy after %d umount tries; detaching it lazily' % (path, tries), LazyUnmountWarning)
    subprocess.run([_which('umount'), '-l', str(path)], capture_output=True, check=False)


def detach(device, tries=10):
    """Detach a loop device (the kernel defers it with autoclear if something still holds it)."""
    for _attempt in range(tries):
        if subprocess.run([_which('losetup'), '-d', device], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)


@contextlib.contextmanager
def make_loop_fs(kind, size, workdir, name=None, mount_options=None, mkfs_options=()):
    """Make a KIND filesystem of SIZE in an image under WORKDIR, mount it, yield the mount point.
    ``mkfs_options``: more arguments for mkfs (the bench sizes ext4's inode count from its tree).

    The image is attached explicitly (losetup --find --show, never a fixed loop number) so the
    exact device is known; on exit, also after errors or KeyboardInterrupt, the filesystem is
    unmounted, the device detached, and image and mount point are removed.
    """
    check_prerequisites(kind)
    name = name or kind
    workdir = Path(workdir)
    image = workdir / (name + '.img')
    mnt = workdir / name
    mnt.mkdir(parents=True)
    device = None
    try:
        with open(image, 'wb') as f:
            f.truncate(parse_size(size))
        _run(MKFS[kind] + list(mkfs_options) + [str(image)])
        device = _run(['losetup', '--find', '--show', str(image)]).strip()
        _run(['mount', '-t', kind] + (['-o', mount_options] if mount_options else []) + [device, str(mnt)])
        yield mnt
    finally:
        try:
            unmount(mnt)
        finally:
            if device:
                detach(device)
            for dev in loop_devices_for(image) if image.exists() else ():
                detach(dev)  # belt and braces: anything else still attached to our image
            with contextlib.suppress(OSError):
                image.unlink()
            with contextlib.suppress(OSError):
                mnt.rmdir()


def fresh_dir(mnt, prefix='t-'):
    """A new empty directory on the filesystem mounted at MNT (session filesystems are shared)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=mnt))


def cleanup_stale(base, prefix):
    """Unmount and detach leftovers of earlier test sessions that were killed (SIGKILL, reboot
    of the process, ...). Only directories BASE/PREFIX* whose owner pid (file ``pid``) is dead
    are touched, so concurrent sessions are safe."""
    for d in Path(base).glob(prefix + '*'):
        try:
            pid = int((d / 'pid').read_text())
            os.kill(pid, 0)
            continue  # owner alive
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours or not readable: leave it alone
        for sub in d.iterdir():
            if sub.is_dir():
                unmount(sub)
        for img in d.glob('*.img'):
            for dev in loop_devices_for(img):
                detach(dev)
        shutil.rmtree(d, ignore_errors=True)
