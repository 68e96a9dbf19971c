"""Notebooks run under nbval must not show a warning or a traceback: a student sees them in red.

After a cell passes, its stderr is read; a line that names a warning (``FutureWarning: ...``) or
starts a traceback fails the cell, with the lines quoted. Fix the cause; a known warning of a
library that changes nothing is hidden exactly where the package calls that library, with the
reason (``checkpoints.peft_deprecation_hidden``). Progress bars and plain log lines on stderr are
not warnings.
"""
from __future__ import annotations

import re

import pytest

ALARMING = re.compile(r"\b[A-Z]\w*(?:Warning|Error): |^Traceback \(most recent call last\)")


def alarming_lines(outputs) -> list[str]:
    """The stderr lines of ``outputs`` (a cell's nbformat outputs) that a student should not see."""
    return [line for output in outputs or []
            if output.get("output_type") == "stream" and output.get("name") == "stderr"
            for line in output.get("text", "").splitlines() if ALARMING.search(line)]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not report.passed:
        return
    lines = alarming_lines(getattr(item, "test_outputs", None))  # nbval: the cell's outputs
    if lines:
        report.outcome = "failed"
        report.longrepr = ("The cell passed but showed on stderr what a student should not see:\n"
                           + "\n".join(f"    {line}" for line in lines)
                           + "\nFix the cause, or hide exactly that warning where the package "
                             "calls the library, and say why.")
