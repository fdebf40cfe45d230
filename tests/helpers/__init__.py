# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by tests/functional, tests/reliability and tests/unit (importable because
pytest.ini puts tests/ on sys.path). One name, one meaning, one module:

  loopfs       loopback filesystems: make, mount, always unmount and detach (bench/ loads it
               by path, so it imports nothing from this package)
  prereq       a missing tool or privilege: fail under CI, skip elsewhere
  ansible_run  ansible / ansible-playbook on localhost, results back as dicts
  trees        building and removing test trees: the hostile tree (every corner rsync -aHAX
               preserves), many plain files, mutations, reference copies, btrfs subvolumes
  oracles      comparing trees independently of the engine: rsync, walks, cmp, FIEMAP,
               getfattr/getfacl, fingerprints to prove something did not change
  snapshots    looking at a snapshot root: snapshot names, latest, leftovers, records, a clock
  processes    the engine and the fslinks-snapshot CLI in child processes, a job config dir
  faults       tests/reliability: scale, seeds, known bugs, the tally, the Chain invariants
"""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
# Holds ansible_collections/fslinks/snapshots -> ROOT (made by scripts/setup.sh or conftest).
COLLECTIONS = ROOT / '.collections'
