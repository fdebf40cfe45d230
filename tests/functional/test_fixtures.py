# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test bed itself: loop filesystems are what they claim, and nothing leaks."""

from __future__ import annotations

import errno
import os
import sys
import time

import pytest

from helpers import ansible_run, loopfs


def _check_mount(mnt, kind):
    assert loopfs.fstype_of(mnt) == kind
    d = loopfs.fresh_dir(mnt)
    f = d / 'probe'
    f.write_bytes(b'x' * 8192)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert f.read_bytes() == b'x' * 8192
    assert os.stat(f).st_dev == os.stat(mnt).st_dev  # really on the loop fs, not underneath


def test_fs_param(fs, request):
    _check_mount(fs, request.node.callspec.params['fs'])


@pytest.mark.parametrize('kind', ['ext4', 'xfs', 'xfs2', 'btrfs'])
def test_session_fixture(kind, request):
    mnt = request.getfixturevalue(kind)
    _check_mount(mnt, kind.rstrip('2'))


def test_xfs2_is_another_filesystem(xfs, xfs2):
    assert os.stat(xfs).st_dev != os.stat(xfs2).st_dev


def test_small_ext4_fills_up(small_ext4):
    _check_mount(small_ext4, 'ext4')
    with pytest.raises(OSError) as exc:
        with open(small_ext4 / 'big', 'wb') as f:
            for _chunk in range(64):
                f.write(b'\0' * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
    assert exc.value.errno == errno.ENOSPC


@pytest.mark.parametrize('kind', ['ext4', 'xfs', 'btrfs'])
def test_make_loop_fs_leaves_nothing(kind, loop_workdir):
    image = loop_workdir / ('leak-%s.img' % kind)
    with loopfs.make_loop_fs(kind, _loop_size(kind), loop_workdir, name='leak-' + kind) as mnt:
        assert loopfs.loop_devices_for(image), 'image should be attached while in use'
        assert loopfs.is_mountpoint(mnt)
        (mnt / 'busy').write_text('x')
    assert not loopfs.is_mountpoint(mnt)
    assert not image.exists() and not mnt.exists()
    assert not _loop_devices_backed_by(image)


def test_make_loop_fs_cleans_up_after_error_while_busy(loop_workdir):
    # An error inside the block while a file on the fs is still open: umount fails (busy),
    # so teardown falls back to a lazy unmount and a deferred detach, which complete as soon
    # as the last user goes away.
    image = loop_workdir / 'busy.img'
    fd = None
    with pytest.raises(RuntimeError, match='boom'), pytest.warns(loopfs.LazyUnmountWarning):
        with loopfs.make_loop_fs('ext4', '16M', loop_workdir, name='busy') as mnt:
            fd = os.open(mnt / 'open-file', os.O_CREAT | os.O_WRONLY)
            raise RuntimeError('boom')
    assert not loopfs.is_mountpoint(mnt)
    os.close(fd)
    for _attempt in range(50):
        if not _loop_devices_backed_by(image):
            break
        time.sleep(0.1)
    assert not _loop_devices_backed_by(image)


def _loop_size(kind):
    return {'ext4': '32M', 'xfs': '320M', 'btrfs': '256M'}[kind]


def _loop_devices_backed_by(image):
    # After the image is deleted `losetup -j` cannot look it up: check sysfs backing files too.
    found = []
    for dev in os.listdir('/sys/block'):
        try:
            with open('/sys/block/%s/loop/backing_file' % dev, encoding='utf-8') as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.replace(' (deleted)', '') == str(image):
            found.append(dev)
    return found


@pytest.mark.ansible
def test_run_adhoc_builtin(tmp_path):
    target = tmp_path / 'f'
    target.write_text('hello\n')
    res = ansible_run.run_adhoc('ansible.builtin.stat', {'path': str(target)})
    assert res['failed'] is False and res['stat']['size'] == 6
    res = ansible_run.run_adhoc('ansible.builtin.copy', {'content': 'new\n', 'dest': str(target)}, check=True, diff=True)
    assert res['changed'] is True and res['diff'][0]['after'] == 'new\n'
    assert target.read_text() == 'hello\n'  # check mode changed nothing
    res = ansible_run.run_adhoc('ansible.builtin.file', {'path': str(tmp_path / 'no' / 'x'), 'state': 'touch'})
    assert res['failed'] is True and res['msg']


@pytest.mark.ansible
def test_run_playbook(tmp_path):
    proc = ansible_run.run_playbook(
        '- hosts: localhost\n  gather_facts: false\n  tasks:\n'
        '    - ansible.builtin.copy: {content: "hi\\n", dest: "%s"}\n' % (tmp_path / 'out'))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / 'out').read_text() == 'hi\n'


def test_collection_importable():
    import ansible_collections.fslinks.snapshots  # noqa: F401  pylint: disable=import-outside-toplevel
    assert os.environ['ANSIBLE_COLLECTIONS_PATH'].endswith('.collections')
    assert any(p.endswith('.collections') for p in sys.path)
