# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A seeded, realistic file tree for the benchmark, and the "1 % changed" edit.

Shape (for N regular file names):
  - directories: about 5 % of N, as a random recursive tree (each new directory hangs under a
    uniformly chosen existing one, so depth grows like log N: ~9 levels at 5000 dirs);
    files spread over them with log-normal weights, so a few directories are large;
  - sizes: log-normal, median 4 KiB, sigma 1.9 (mean ~25 KiB: ~2.5 GB at 100k files), 2 % empty,
    capped at 256 MiB; ``scale`` multiplies every size, ``total_bytes`` rescales to a total;
  - 1 % of the names are extra hard links to other files of the tree (nlink 2);
  - symlinks: 3 % of N on top, relative, to files of the tree (5 % of them dangling);
  - modes 0644/0600/0755/0664, 20 % owned by 1000:1000, mtimes spread over two years
    (nanosecond parts included), directories' mtimes set last.
Same seed, same arguments -> the same tree, byte for byte (data comes from one seeded buffer).
"""

from __future__ import annotations

import math
import os
import random

MEDIAN = 4096
SIGMA = 1.9
CAP = 256 << 20
EMPTY = 0.02
DIR_SHARE = 0.05
LINK_SHARE = 0.01
SYMLINK_SHARE = 0.03
DANGLING = 0.05
BUF_SIZE = 8 << 20
T0 = 1_700_000_000            # 2023-11-14: mtimes lie in the two years after this
CHANGED_MTIME = T0 + 3 * 365 * 86400

_SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'si', 'po', 'de', 'an', 'or', 'el', 'ux', 'io',
              'st', 'tr', 'qu', 'ba', 'zo', 'fi']
_EXTS = ['.txt', '.py', '.c', '.h', '.json', '.log', '.jpg', '.png', '.so', '.md', '.conf', '.gz',
         '.html', '.csv', '']
_MODES = [0o644] * 14 + [0o600] * 3 + [0o755] * 2 + [0o664]


def _name(rng, ext=True):
    n = ''.join(rng.choice(_SYLLABLES) for _i in range(rng.randint(1, 5)))
    return n + (rng.choice(_EXTS) if ext else '')


def plan_sizes(rng, files, scale=1.0, total_bytes=None):
    mu = math.log(MEDIAN)
    sizes = [0 if rng.random() < EMPTY else min(CAP, int(rng.lognormvariate(mu, SIGMA) * scale))
             for _i in range(files)]
    if total_bytes:
        s = sum(sizes) or 1
        f = total_bytes / s
        sizes = [min(CAP, int(x * f)) for x in sizes]
    return sizes


def _ns(rng):
    return (T0 + rng.randrange(2 * 365 * 86400)) * 10**9 + rng.randrange(10**9)


def generate(root, files, seed=1, scale=1.0, total_bytes=None):
    """Fill ROOT (an existing empty directory) with the tree; returns a summary dict."""
    rng = random.Random(seed)
    buf = random.Random(seed ^ 0x5eed).randbytes(BUF_SIZE)
    root = os.fspath(root)
    ndirs = max(1, int(round(files * DIR_SHARE)))
    # Directory tree: dirs[0] is the root ('').
    dirs = ['']
    used = {''}
    for _i in range(ndirs - 1):
        parent = rng.choice(dirs)
        while True:
            rel = os.path.join(parent, _name(rng, ext=False)) if parent else _name(rng, ext=False)
            if rel not in used:
                break
        used.add(rel)
        dirs.append(rel)
    for rel in dirs[1:]:
        os.mkdir(os.path.join(root, rel), 0o755)
    weights = [rng.lognormvariate(0, 1.0) for _d in dirs]
    nlinks = int(files * LINK_SHARE)
    nreal = files - nlinks
    sizes = plan_sizes(rng, nreal, scale, total_bytes)
    paths = []
    names_in = {}
    cum = list(_accumulate(weights))
    for i in range(files):
        d = rng.choices(dirs, cum_weights=cum)[0]
        taken = names_in.setdefault(d, set())
        while True:
            nm = _name(rng)
            if nm not in taken and (os.path.join(d, nm) if d else nm) not in used:
                break
        taken.add(nm)
        paths.append(os.path.join(d, nm) if d else nm)
    total = 0
    for i in range(nreal):
        total += _write_file(os.path.join(root, paths[i]), sizes[i], rng, buf)
    for i in range(nreal, files):
        os.link(os.path.join(root, paths[rng.randrange(nreal)]), os.path.join(root, paths[i]))
    nsym = int(files * SYMLINK_SHARE)
    for _i in range(nsym):
        d = rng.choices(dirs, cum_weights=cum)[0]
        taken = names_in.setdefault(d, set())
        while True:
            nm = _name(rng, ext=False) + '.lnk'
            if nm not in taken:
                break
        taken.add(nm)
        target = paths[rng.randrange(files)]
        rel = os.path.relpath(target, d or '.')
        if rng.random() < DANGLING:
            rel += '.gone'
        p = os.path.join(root, d, nm)
        os.symlink(rel, p)
        ns = _ns(rng)
        os.utime(p, ns=(ns, ns), follow_symlinks=False)
    # Directory mtimes last, deepest first (creating entries moved them).
    for rel in sorted(dirs, key=lambda r: -r.count('/') if r else 1):
        ns = _ns(rng)
        os.utime(os.path.join(root, rel) if rel else root, ns=(ns, ns))
    return {'files': files, 'dirs': ndirs, 'hardlinks': nlinks, 'symlinks': nsym, 'bytes': total,
            'seed': seed, 'scale': scale}


def _accumulate(weights):
    s = 0.0
    for w in weights:
        s += w
        yield s


def _write_file(path, size, rng, buf):
    mode = rng.choice(_MODES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = size
        off = rng.randrange(BUF_SIZE)
        while left > 0:
            chunk = buf[off:off + min(left, 1 << 20)]
            if not chunk:
                off = 0
                continue
            os.write(fd, chunk)
            left -= len(chunk)
            off = (off + len(chunk)) % BUF_SIZE
        os.fchmod(fd, mode)
        if rng.random() < 0.2:
            os.fchown(fd, 1000, 1000)
        ns = _ns(rng)
        os.utime(fd, ns=(ns, ns))
    finally:
        os.close(fd)
    return size


def regular_files(root):
    """Relative paths of every regular file name under ROOT, sorted (deterministic)."""
    out = []
    root = os.fspath(root)
    for d, _dirs, fnames in os.walk(root):
        for f in fnames:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    out.sort()
    return out


def change_files(root, share=0.01, seed=1):
    """Rewrite the first 4 KiB of SHARE of the regular files (an empty one gets 100 bytes) and
    give them a new mtime; deterministic, so two copies of a tree change identically.
    Returns the number of files changed. Parent directories keep their mtimes."""
    rng = random.Random(seed * 7919 + 1)
    names = regular_files(root)
    chosen = rng.sample(names, max(1, int(len(names) * share))) if names else []
    for rel in chosen:
        p = os.path.join(os.fspath(root), rel)
        st = os.stat(p)
        fd = os.open(p, os.O_WRONLY)
        try:
            os.pwrite(fd, rng.randbytes(min(st.st_size, 4096) or 100), 0)
        finally:
            os.close(fd)
        ns = CHANGED_MTIME * 10**9 + rng.randrange(10**9)
        os.utime(p, ns=(ns, ns))
    return len(chosen)
