# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' doors: on bad paths every module fails through fail_json with a message that
names the path and the cause, and returns that path; never a module traceback."""

import pytest

from helpers.ansible_run import run_adhoc

pytestmark = [pytest.mark.loopfs, pytest.mark.ansible]


def _failed_naming(result, path, cause):
    assert result['failed'] and 'module_stderr' not in result, result
    assert path in result['msg'] and cause in result['msg'], result
    assert result['path'] == path, result


def test_engine_install_bad_paths(ext4, workdir):
    work = workdir(ext4)
    (work / 'file').write_text('x')
    under_file = str(work / 'file' / 'pkg')
    _failed_naming(run_adhoc('engine_install', {'path': under_file}), under_file, 'not a directory')
    # os.makedirs raises ValueError for a NUL byte, which no OSError handler catches.
    nul = str(work / 'pkg\u0000x')
    result = run_adhoc('engine_install', {'path': nul})
    assert result['failed'] and 'module_stderr' not in result and 'NUL' in result['msg'], result
    assert result['path'] == nul


def test_link_facts_bad_paths(ext4, workdir):
    work = workdir(ext4)
    (work / 'file').write_text('x')
    missing = str(work / 'missing')
    _failed_naming(run_adhoc('link_facts', {'compare': [[missing, str(work / 'file')]]}),
                   missing, 'no such file or directory')
    _failed_naming(run_adhoc('link_facts', {'compare': [[str(work), str(work / 'file')]]}),
                   str(work), 'not a regular file')


@pytest.mark.parametrize('diff', [False, True])
def test_hardlink_snapshot_dest_a_file(diff, ext4, workdir):
    """With --diff the module lists the root before the run: a root that is a file must fail
    there as clearly as in the run itself."""
    work = workdir(ext4)
    (work / 'src').mkdir()
    (work / 'snaps').write_text('not a directory\n')
    result = run_adhoc('hardlink_snapshot', {'src': str(work / 'src'), 'dest': str(work / 'snaps')}, diff=diff)
    _failed_naming(result, str(work / 'snaps'), 'not a directory')
    assert (work / 'snaps').read_text() == 'not a directory\n'


def test_hardlink_snapshot_src_missing(ext4, workdir):
    work = workdir(ext4)
    result = run_adhoc('hardlink_snapshot', {'src': str(work / 'nope'), 'dest': str(work / 'snaps')})
    _failed_naming(result, str(work / 'nope'), 'no such file or directory')
    assert not (work / 'snaps').exists()
