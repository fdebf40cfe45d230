# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exclude patterns (_tree.Excluder, _tree._glob_to_regex) against a reference model.

The model is a plain recursive wildcard matcher written from the documented, rsync-like
semantics, not from the regex translation: '/x' is anchored at src, 'x/' matches directories
only, a pattern with a '/' inside (or a '**') is matched against the whole relative path at any
directory boundary, otherwise against the name; '*' and '?' never match '/', '**' does, and
'[ab]' / '[!ab]' are sets.  No filesystem is needed.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.fslinks.snapshots.plugins.module_utils._tree import Excluder, _glob_to_regex


# ---------------------------------------------------------------- the reference model

def glob_match(pat, s):
    """Does the whole of S (bytes) match the wildcard pattern PAT (bytes)?"""
    if not pat:
        return not s
    if pat.startswith(b'**'):
        return any(glob_match(pat[2:], s[k:]) for k in range(len(s) + 1))
    if pat[:1] == b'*':
        stop = s.find(b'/')
        stop = len(s) if stop < 0 else stop
        return any(glob_match(pat[1:], s[k:]) for k in range(stop + 1))
    if pat[:1] == b'?':
        return bool(s) and s[:1] != b'/' and glob_match(pat[1:], s[1:])
    if pat[:1] == b'[':
        end = pat.index(b']', 2)
        body = pat[1:end]
        negate = body[:1] in (b'!', b'^')
        chars = body[1:] if negate else body
        return bool(s) and ((s[:1] in [chars[i:i + 1] for i in range(len(chars))]) != negate) \
            and glob_match(pat[end + 1:], s[1:])
    return s[:1] == pat[:1] and glob_match(pat[1:], s[1:])


def model_excluded(patterns, rel, is_dir):
    name = rel.rsplit(b'/', 1)[-1]
    for pattern in patterns:
        dir_only = pattern.endswith(b'/')
        pat = pattern.rstrip(b'/')
        anchored = pat.startswith(b'/')
        pat = pat.lstrip(b'/')
        if dir_only and not is_dir:
            continue
        if anchored:
            hit = glob_match(pat, rel)
        elif b'/' in pat or b'**' in pat:
            # Any trailing part of the path that starts at a directory boundary.
            starts = [0] + [i + 1 for i, c in enumerate(rel) if c == ord('/')]
            hit = any(glob_match(pat, rel[k:]) for k in starts)
        else:
            hit = glob_match(pat, name)
        if hit:
            return True
    return False


# ---------------------------------------------------------------- strategies

# A small alphabet, so that generated patterns and paths often meet.
components = st.lists(st.sampled_from([b'a', b'b', b'.']), min_size=1, max_size=3).map(b''.join)
paths = st.lists(components, min_size=1, max_size=4).map(b'/'.join)
tokens = st.sampled_from([b'a', b'b', b'.', b'/', b'*', b'**', b'?', b'[ab]', b'[!a]', b'[^b]'])
bodies = st.lists(tokens, min_size=1, max_size=6).map(b''.join).filter(
    # '***' has a meaning of its own in rsync that is not documented here; leave it out.
    lambda b: b'***' not in b and b.strip(b'/'))
patterns = st.builds(lambda lead, body, trail: lead + body + trail,
                     st.sampled_from([b'', b'/']), bodies, st.sampled_from([b'', b'/']))


@given(st.lists(patterns, min_size=1, max_size=3), paths, st.booleans())
def test_excluder_agrees_with_the_model(pats, rel, is_dir):
    name = rel.rsplit(b'/', 1)[-1]
    got = Excluder([p.decode() for p in pats]).excluded(rel, name, is_dir)
    assert got == model_excluded(pats, rel, is_dir), (pats, rel, is_dir)


@given(bodies.filter(lambda b: b'/' not in b), paths)
def test_glob_to_regex_agrees_with_the_model(body, s):
    assert bool(re.match(b'\\A' + _glob_to_regex(body) + b'\\Z', s, re.S)) == glob_match(body, s), (body, s)


@given(paths, st.booleans())
def test_no_patterns_exclude_nothing(rel, is_dir):
    ex = Excluder([])
    assert not ex
    assert ex.excluded(rel, rel.rsplit(b'/', 1)[-1], is_dir) is False


# ---------------------------------------------------------------- the documented cases, by hand
# (so that a model and an engine that are wrong the same way still fail somewhere)

@pytest.mark.parametrize('pattern,rel,is_dir,expected', [
    ('/cache', b'cache', True, True),
    ('/cache', b'a/cache', True, False),          # anchored: only at the top
    ('cache', b'a/cache', True, True),            # a bare name: at any depth
    ('cache/', b'cache', False, False),           # dir-only: not a file of that name
    ('cache/', b'a/cache', True, True),
    ('*.tmp', b'x.tmp', False, True),
    ('*.tmp', b'd/x.tmp', False, True),           # matched against the name
    ('d/*.tmp', b'd/e/x.tmp', False, False),      # '*' does not cross '/'
    ('d/**.tmp', b'd/e/x.tmp', False, True),      # '**' does
    ('d/*.tmp', b'top/d/x.tmp', False, True),     # at any directory boundary ...
    ('d/*.tmp', b'topd/x.tmp', False, False),     # ... and only there
    ('/d/*.tmp', b'top/d/x.tmp', False, False),
    ('?', b'a', False, True),
    ('a?b', b'a/b', False, False),                # '?' does not match '/'
    ('[ab]x', b'bx', False, True),
    ('[!ab]x', b'bx', False, False),
    ('[!ab]x', b'cx', False, True),
])
def test_documented_cases(pattern, rel, is_dir, expected):
    name = rel.rsplit(b'/', 1)[-1]
    assert Excluder([pattern]).excluded(rel, name, is_dir) is expected
    assert model_excluded([pattern.encode()], rel, is_dir) is expected


@pytest.mark.parametrize('bad', ['/', '//', '', 'a\0b', 3, None])
def test_patterns_that_match_nothing_or_are_not_strings_are_refused(bad):
    with pytest.raises(ValueError):
        Excluder([bad])


@pytest.mark.parametrize('bad', ['*.tmp', b'*.tmp', 7])
def test_exclude_must_be_a_list(bad):
    with pytest.raises(ValueError, match='list'):
        Excluder(bad)
