# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parsing of /proc/self/mountinfo text and path -> mount resolution (_mounts.py).

No mounts are made here: the mountinfo text is written by hand in the kernel's format
(proc(5)): ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.fslinks.snapshots.plugins.module_utils import _mounts
from ansible_collections.fslinks.snapshots.plugins.module_utils._mounts import (
    Mount, file_type, hardlink_capable, mount_of, parse_mountinfo, reflink_capable, unescape,
)

SAMPLE = (
    '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n'
    '23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n'
    '40 22 7:0 / /mnt/data rw,relatime shared:30 master:2 propagate_from:5 unbindable - xfs /dev/loop0 '
    'rw,attr2,inode64,logbufs=8,logbsize=32k,noquota\n'
    '41 22 0:45 /@home /home rw,relatime - btrfs /dev/vdb rw,space_cache=v2,subvolid=257,subvol=/@home\n'
    '42 22 0:46 / /srv rw - tmpfs tmpfs\n'
)


def by_mountpoint(mounts):
    return {m.mountpoint: m for m in mounts}


# ---------------------------------------------------------------- fields

def test_fields_are_parsed():
    mounts = parse_mountinfo(SAMPLE)
    assert [m.mountpoint for m in mounts] == ['/', '/proc', '/mnt/data', '/home', '/srv']
    root = mounts[0]
    assert (root.mount_id, root.parent_id, root.device, root.root) == (22, 1, '8:1', '/')
    assert (root.options, root.fstype, root.source, root.super_options) == (
        'rw,relatime', 'ext4', '/dev/sda1', 'rw,errors=remount-ro')


def test_optional_fields_of_any_number():
    m = by_mountpoint(parse_mountinfo(SAMPLE))
    data = m['/mnt/data']
    # Four optional fields before the separator do not shift anything.
    assert (data.options, data.fstype, data.source) == ('rw,relatime', 'xfs', '/dev/loop0')
    assert data.super_options.startswith('rw,attr2')
    # None at all.
    assert (m['/home'].fstype, m['/home'].source) == ('btrfs', '/dev/vdb')


def test_missing_super_options_and_junk_lines():
    text = ('\n   \nnot a mountinfo line\n'
            '1 2 3\n'
            '50 22 0:50 / /x rw - tmpfs\n'                  # no source: skipped
            '51 22 0:51 / /y rw - tmpfs none\n'             # no super options
            '52 22 0:52 / /z rw shared:3 - tmpfs none rw,size=4k\n')
    mounts = parse_mountinfo(text)
    assert [m.mountpoint for m in mounts] == ['/y', '/z']
    assert mounts[0].super_options == '' and mounts[1].super_options == 'rw,size=4k'


def test_btrfs_subvolume_shows_the_root_field():
    m = by_mountpoint(parse_mountinfo(SAMPLE))
    assert m['/home'].btrfs_subvolume == '/@home'
    assert m['/mnt/data'].btrfs_subvolume is None
    d = m['/home'].as_dict(reflink=True)
    assert d == {'mount': '/home', 'device': '/dev/vdb', 'fstype': 'btrfs', 'options': 'rw,relatime',
                 'reflink': True, 'hardlink': True, 'btrfs_subvolume': '/@home'}


# ---------------------------------------------------------------- escapes

@pytest.mark.parametrize('escaped,plain', [
    (r'/mnt/with\040space', '/mnt/with space'),
    (r'/mnt/with\011tab', '/mnt/with\ttab'),
    (r'/mnt/with\012newline', '/mnt/with\nnewline'),
    (r'/mnt/back\134slash', '/mnt/back\\slash'),
    (r'/mnt/all\040\011\012\134', '/mnt/all \t\n\\'),
    # A name that really holds "\040": the kernel escapes its backslash, not the digits.
    (r'/mnt/literal\134040', '/mnt/literal\\040'),
    (r'/mnt/plain', '/mnt/plain'),
    (r'/mnt/not\04escape', '/mnt/not\\04escape'),
])
def test_unescape(escaped, plain):
    assert unescape(escaped) == plain


def test_escapes_in_root_mountpoint_and_source():
    line = r'60 22 0:60 /sub\040vol /mnt/a\040b\011c\012d\134e rw - tmpfs my\040src rw' + '\n'
    (m,) = parse_mountinfo(line)
    assert m.mountpoint == '/mnt/a b\tc\nd\\e'
    assert m.root == '/sub vol'
    assert m.source == 'my src'
    # An escaped separator-like text in a path does not split the line.
    (m,) = parse_mountinfo(r'61 22 0:61 / /mnt/x\040-\040y rw - tmpfs none rw' + '\n')
    assert (m.mountpoint, m.fstype) == ('/mnt/x - y', 'tmpfs')


def test_non_utf8_mountpoint_roundtrips_as_bytes():
    raw = b'62 22 0:62 / /mnt/caf\xe9 rw - tmpfs none rw\n'
    (m,) = parse_mountinfo(raw.decode('utf-8', 'surrogateescape'))
    assert os.fsencode(m.mountpoint) == b'/mnt/caf\xe9'
    found = mount_of(b'/mnt/caf\xe9/file', parse_mountinfo(SAMPLE) + [m])
    assert found is m


# ---------------------------------------------------------------- path -> mount

def test_longest_prefix_wins():
    mounts = parse_mountinfo(SAMPLE)
    assert mount_of('/mnt/data/x/y', mounts).mountpoint == '/mnt/data'
    assert mount_of('/mnt/data', mounts).mountpoint == '/mnt/data'
    assert mount_of('/mnt/data/', mounts).mountpoint == '/mnt/data'
    assert mount_of('/mnt/database', mounts).mountpoint == '/', 'prefix must end at a /'
    assert mount_of('/mnt', mounts).mountpoint == '/'
    assert mount_of('/home/u/file', mounts).mountpoint == '/home'
    assert mount_of('/', mounts).mountpoint == '/'
    assert mount_of('/srv/../mnt/data/f', mounts).mountpoint == '/mnt/data'


def test_no_mount_matches():
    assert mount_of('/anything', parse_mountinfo('70 1 0:1 / /only rw - tmpfs none rw\n')) is None
    assert reflink_capable(None) is None


def test_stacked_mounts_last_one_is_on_top():
    text = SAMPLE + ('80 40 0:80 / /mnt/data rw - tmpfs over rw\n'
                     '81 80 0:81 / /mnt/data rw - ext4 /dev/loop9 rw\n')
    m = mount_of('/mnt/data/f', parse_mountinfo(text))
    assert (m.mount_id, m.fstype) == (81, 'ext4')


def test_stacked_mounts_follow_parent_ids_not_file_order():
    """Mounted *beneath* (move_mount MOVE_MOUNT_BENEATH, Linux 6.5+): the newer mount is
    listed later but is underneath; the one on top is the one whose parent is the other.
    The parent chain, not the order of lines, says which mount hides which."""
    text = SAMPLE + ('90 40 0:90 / /mnt/data rw - tmpfs top rw\n'        # parent: 40 -> replaced below
                     '91 40 0:91 / /mnt/data rw - ext4 /dev/loop8 rw\n')
    # Make 90 sit on 91: 91 was slid beneath 90.
    text = text.replace('90 40 0:90', '90 91 0:90')
    m = mount_of('/mnt/data/f', parse_mountinfo(text))
    assert (m.mount_id, m.source) == (90, 'top')


def test_symlink_lives_where_its_name_is(tmp_path):
    """mount_of(symlink) is the mount of the directory holding the link, whatever it
    points to; a path through a symlinked directory is resolved."""
    base = os.path.realpath(tmp_path)
    os.symlink('/mnt/data/target', os.path.join(base, 'link'))
    os.symlink('/mnt/data', os.path.join(base, 'dirlink'))
    text = SAMPLE + '95 22 0:95 / %s rw - tmpfs here rw\n' % base.replace(' ', '\\040')
    mounts = parse_mountinfo(text)
    assert mount_of(os.path.join(base, 'link'), mounts).mountpoint == base
    assert mount_of(os.path.join(base, 'dirlink'), mounts).mountpoint == base
    assert mount_of(os.path.join(base, 'dirlink', 'f'), mounts).mountpoint == '/mnt/data'
    assert mount_of(os.fsencode(os.path.join(base, 'link')), mounts).mountpoint == base


# ---------------------------------------------------------------- capability tables

@pytest.mark.parametrize('fstype,reflink,hardlink', [
    ('ext4', False, True), ('btrfs', True, True), ('tmpfs', False, True), ('vfat', False, False),
    ('nfs4', None, True), ('zfs', None, True), ('fuse.sshfs', None, None),
])
def test_capability_tables(fstype, reflink, hardlink):
    m = Mount(mount_id=1, parent_id=0, device='0:1', root='/', mountpoint='/nonexistent-x',
              options='rw', fstype=fstype, source='s', super_options='rw')
    assert reflink_capable(m) is reflink            # no probe: unknown stays None
    assert hardlink_capable(fstype) is hardlink


@pytest.mark.parametrize('kind,name', [
    (0o100000, 'file'), (0o040000, 'directory'), (0o120000, 'link'), (0o010000, 'fifo'),
    (0o020000, 'char'), (0o060000, 'block'), (0o140000, 'socket'),
])
def test_file_type(kind, name):
    assert file_type(kind | 0o644) == name


def test_read_mounts_reads_this_process_mountinfo():
    mounts = _mounts.read_mounts()
    assert any(m.mountpoint == '/' for m in mounts)
    assert mount_of('/proc/self', mounts).fstype == 'proc'
