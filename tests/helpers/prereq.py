# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Missing prerequisites: a skip on a developer's machine, a failure in CI (where a silent skip
would hide that a whole class of tests never ran)."""

from __future__ import annotations

import os
import shutil

import pytest


def unavailable(msg):
    """Skip the current test with MSG, or fail it when the CI environment variable is set."""
    if os.environ.get('CI'):
        pytest.fail(msg + ' (CI is set, so this is an error, not a skip)', pytrace=False)
    pytest.skip(msg)


def need(tool):
    """unavailable() unless the command-line TOOL is on PATH (or in sbin, which a non-root PATH
    may lack)."""
    if shutil.which(tool) or shutil.which(tool, path='/usr/sbin:/sbin'):
        return
    unavailable('%s is needed for this test' % tool)
