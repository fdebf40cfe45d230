# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: a stdout callback that keeps every task result whole, as JSON.

The default ad-hoc output (``minimal``) drops ``diff`` and prints some modules' results as
plain text; tests need the exact result dict. Each result is appended as one JSON line to the
file named by FSLINKS_TEST_RESULT_FILE, and echoed on one line to stdout for humans.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: fslinks_test_result
type: stdout
short_description: write whole task results as JSON lines (fslinks.snapshots tests only)
description:
  - Appends each task result to the file named by E(FSLINKS_TEST_RESULT_FILE).
author: fslinks.snapshots contributors
"""


class CallbackModule(CallbackBase):
    """Record whole task results."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'fslinks_test_result'

    def _record(self, result, status):
        data = dict(result_dict(result))  # copied first: the display below pops warnings
        if hasattr(self, '_handle_warnings_and_exception'):
            self._handle_warnings_and_exception(result)  # warnings go to stderr as usual
        host = getattr(result, 'host', None) or getattr(result, '_host')
        task = getattr(result, 'task', None) or getattr(result, '_task')
        line = json.dumps({'host': host.get_name(), 'task': task.get_name(), 'status': status, 'result': data},
                          default=str, sort_keys=True)
        self._display.display('%s | %s => %s' % (host.get_name(), status, json.dumps(data, default=str, sort_keys=True)))
        path = os.environ.get('FSLINKS_TEST_RESULT_FILE')
        if path:
            with open(path, 'a', encoding='utf-8') as f:
                f.write(line + '\n')

    def v2_runner_on_ok(self, result, *args, **kwargs):
        self._record(result, 'CHANGED' if result_dict(result).get('changed') else 'SUCCESS')

    def v2_runner_on_failed(self, result, ignore_errors=False, *args, **kwargs):
        self._record(result, 'FAILED')

    def v2_runner_on_unreachable(self, result, *args, **kwargs):
        self._record(result, 'UNREACHABLE')

    def v2_runner_on_skipped(self, result, *args, **kwargs):
        self._record(result, 'SKIPPED')


def result_dict(result):
    """The result dict of a callback result (ansible-core 2.19 and older)."""
    return getattr(result, 'result', None) or getattr(result, '_result', {})
