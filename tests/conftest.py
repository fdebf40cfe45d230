# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pytest setup: the collection on sys.path, loopback filesystems, ansible helpers.

Loop filesystem fixtures (each yields the mount point as a pathlib.Path):
  ext4, xfs, btrfs, xfs2   session-scoped; share them by working in a fresh subdirectory
                           (the workdir fixture), never assume the fs is empty
  fs                       parametrized over ext4, xfs, btrfs
  small_ext4               function-scoped 16M ext4, for ENOSPC tests
  loop_fs                  function-scoped factory: loop_fs('xfs', '320M', mount_options=...)
They need root, /dev/loop-control and mkfs.<kind>: without them a test is skipped, or fails
when the CI environment variable is set (CI must not silently skip them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: a test's speed is never asserted (the unit tests that touch a
# directory can take 0.5 s on a loaded machine; Hypothesis would call that a failure).
settings.register_profile('fslinks', deadline=None)
settings.load_profile('fslinks')

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COLLECTIONS = ROOT / '.collections'

# Importable helpers (the helpers package) and the collection as
# ansible_collections.fslinks.snapshots..., through the same symlink scripts/setup.sh makes.
_link = COLLECTIONS / 'ansible_collections' / 'fslinks' / 'snapshots'
if not _link.exists():
    _link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        _link.symlink_to(Path('..', '..', '..'))
for _p in (str(TESTS), str(COLLECTIONS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
os.environ['ANSIBLE_COLLECTIONS_PATH'] = str(COLLECTIONS)

# pylint: disable=wrong-import-position
from helpers import ansible_run, loopfs, trees  # noqa: E402
from helpers.prereq import unavailable  # noqa: E402

# Images live on disk, not in memory: /var/tmp is never a tmpfs here, /tmp may be.
LOOP_BASE = os.environ.get('FSLINKS_TEST_TMPDIR', '/var/tmp')
LOOP_PREFIX = 'fslinks-pytest-'

SIZES = {'ext4': '256M', 'xfs': '320M', 'btrfs': '256M'}


def _sigterm(signum, frame):
    # Turn SIGTERM (a CI timeout, kill PID) into KeyboardInterrupt so pytest runs the
    # fixture teardowns that unmount and detach. SIGKILL cannot be caught: the next session
    # cleans those leftovers up (cleanup_stale).
    raise KeyboardInterrupt('SIGTERM')


def pytest_configure(config):  # pylint: disable=unused-argument
    signal.signal(signal.SIGTERM, _sigterm)


LOOP_FIXTURES = {'ext4', 'xfs', 'xfs2', 'btrfs', 'fs', 'loop_fs', 'small_ext4', 'loop_workdir'}


def pytest_collection_modifyitems(items):
    # Mark tests that use loop filesystems, so `-m "not loopfs"` runs the rest anywhere.
    for item in items:
        if LOOP_FIXTURES.intersection(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.loopfs)


@pytest.fixture(scope='session')
def loop_workdir():
    """A per-session directory under /var/tmp for loop images and mount points."""
    if os.geteuid() == 0 and os.path.isdir(LOOP_BASE):
        loopfs.cleanup_stale(LOOP_BASE, LOOP_PREFIX)
    d = Path(tempfile.mkdtemp(prefix=LOOP_PREFIX, dir=LOOP_BASE))
    (d / 'pid').write_text(str(os.getpid()))
    try:
        yield d
    finally:
        (d / 'pid').unlink()
        with contextlib.suppress(OSError):
            d.rmdir()  # left in place (with its pid file gone) only if something leaked


def _mount(kind, workdir, size=None, name=None, mount_options=None):
    reason = None
    try:
        loopfs.check_prerequisites(kind)
    except loopfs.LoopFsUnavailable as e:
        reason = str(e)
    if reason:  # outside the except block, so the report shows no chained traceback
        unavailable('loop filesystem unavailable: %s' % reason)
    return loopfs.make_loop_fs(kind, size or SIZES[kind], workdir, name=name, mount_options=mount_options)


@pytest.fixture(scope='session')
def ext4(loop_workdir):
    with _mount('ext4', loop_workdir) as mnt:
        yield mnt


@pytest.fixture(scope='session')
def xfs(loop_workdir):
    with _mount('xfs', loop_workdir) as mnt:
        yield mnt


@pytest.fixture(scope='session')
def xfs2(loop_workdir):
    """A second XFS, for cross-filesystem tests."""
    with _mount('xfs', loop_workdir, name='xfs2') as mnt:
        yield mnt


@pytest.fixture(scope='session')
def btrfs(loop_workdir):
    with _mount('btrfs', loop_workdir) as mnt:
        yield mnt


@pytest.fixture(params=['ext4', 'xfs', 'btrfs'])
def fs(request):
    """Each of the session filesystems in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def loop_fs(loop_workdir):
    """Factory for filesystems that live only for one test: loop_fs(kind, size, mount_options=None)."""
    with contextlib.ExitStack() as stack:
        count = [0]

        def make(kind, size, mount_options=None):
            count[0] += 1
            name = 'fn-%s-%d-%d' % (kind, os.getpid(), count[0])
            return stack.enter_context(_mount(kind, loop_workdir, size, name, mount_options))

        yield make


@pytest.fixture
def small_ext4(loop_fs):
    """A 16M ext4 for ENOSPC tests (a fresh one per test)."""
    return loop_fs('ext4', '16M')


@pytest.fixture
def ansible_env():
    """Environment dict for running ansible commands in a subprocess."""
    return ansible_run.ansible_env()


@pytest.fixture
def workdir():
    """workdir(mnt) -> a new empty directory on the filesystem mounted at mnt,
    removed with everything in it (read-only btrfs subvolumes too) after the test."""
    made = []

    def make(mnt, prefix='t-'):
        made.append(loopfs.fresh_dir(mnt, prefix=prefix))
        return made[-1]

    yield make
    for path in reversed(made):
        trees.remove_tree(path)
