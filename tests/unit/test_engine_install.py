# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""engine_install ships every engine file: a new file in module_utils must be listed there,
or the scheduled jobs would run without it."""

from pathlib import Path

from ansible_collections.fslinks.snapshots.plugins.modules import engine_install

MODULE_UTILS = Path(__file__).resolve().parents[2] / 'plugins' / 'module_utils'


def test_every_engine_file_is_shipped_byte_for_byte():
    files = engine_install.engine_files()
    on_disk = {p.name: p.read_bytes() for p in MODULE_UTILS.glob('_*.py')}
    assert set(files) - {'__init__.py'} == set(on_disk)
    assert all(files[name] == data for name, data in on_disk.items())
