# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_tree.Meta.differs: which preserved attributes tell two entries apart.  It decides whether an
existing copy is up to date, so a missed difference is a stale copy and a false one a needless
rewrite.  Meta only reads stat fields, so plain objects with those fields stand in for stat
results here; no filesystem is needed."""

from __future__ import annotations

import stat
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.fslinks.snapshots.plugins.module_utils._tree import Meta

TYPES = [stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK]
PRESERVE = ['mode', 'ownership', 'timestamps', 'xattrs']

xattrs = st.one_of(st.none(), st.dictionaries(st.sampled_from([b'user.a', b'user.b', b'trusted.c']),
                                              st.sampled_from([b'', b'1', b'2']), max_size=2))
metas = st.builds(
    lambda kind, perm, uid, gid, mtime, atime, size, xa: Meta(SimpleNamespace(
        st_mode=kind | perm, st_uid=uid, st_gid=gid, st_mtime_ns=mtime, st_atime_ns=atime, st_size=size), xa),
    st.sampled_from(TYPES), st.integers(0, 0o7777), st.integers(0, 2), st.integers(0, 2),
    st.integers(0, 3), st.integers(0, 3), st.integers(0, 2), xattrs)
preserves = st.sets(st.sampled_from(PRESERVE))


def expected(a, b, preserve):
    """The documented rule, attribute by attribute, in the order differs() reports them."""
    out = []
    if stat.S_IFMT(a.mode) != stat.S_IFMT(b.mode):
        out.append('type')
    if stat.S_ISREG(a.mode) and a.size != b.size:
        out.append('size')          # only a regular file's size is content
    if 'mode' in preserve and not stat.S_ISLNK(a.mode) and stat.S_IMODE(a.mode) != stat.S_IMODE(b.mode):
        out.append('mode')          # a symlink's mode cannot be set on Linux
    if 'ownership' in preserve and (a.uid, a.gid) != (b.uid, b.gid):
        out.append('owner')
    if 'timestamps' in preserve and a.mtime_ns != b.mtime_ns:
        out.append('mtime')
    if 'xattrs' in preserve and (a.xattrs or {}) != (b.xattrs or {}):
        out.append('xattrs')        # None (not read) and {} (none there) are the same
    return out


@given(metas, metas, preserves)
def test_differs_follows_the_rule(a, b, preserve):
    assert a.differs(b, preserve) == expected(a, b, preserve)


@given(metas, preserves)
def test_an_entry_never_differs_from_itself(a, preserve):
    assert a.differs(a, preserve) == []


@given(metas, metas)
def test_only_type_and_size_count_when_nothing_is_preserved(a, b):
    assert set(a.differs(b, set())) <= {'type', 'size'}


@given(metas, st.integers(0, 10 ** 18), preserves)
def test_atime_never_counts(a, atime, preserve):
    # rsync -a does not preserve atimes; a copy whose only difference is one is up to date.
    b = Meta(SimpleNamespace(st_mode=a.mode, st_uid=a.uid, st_gid=a.gid, st_mtime_ns=a.mtime_ns,
                             st_atime_ns=atime, st_size=a.size), a.xattrs)
    assert a.differs(b, preserve) == []


def test_each_preserved_attribute_is_seen():
    base = dict(st_mode=stat.S_IFREG | 0o644, st_uid=0, st_gid=0, st_mtime_ns=1, st_atime_ns=1, st_size=5)
    a = Meta(SimpleNamespace(**base), {b'user.a': b'1'})
    for field, value, name in [('st_mode', stat.S_IFREG | 0o600, 'mode'), ('st_uid', 7, 'owner'),
                               ('st_gid', 7, 'owner'), ('st_mtime_ns', 2, 'mtime'), ('st_size', 6, 'size'),
                               ('st_mode', stat.S_IFDIR | 0o644, 'type')]:
        b = Meta(SimpleNamespace(**dict(base, **{field: value})), {b'user.a': b'1'})
        assert a.differs(b, set(PRESERVE)) == [name], field
    assert a.differs(Meta(SimpleNamespace(**base), {}), set(PRESERVE)) == ['xattrs']
