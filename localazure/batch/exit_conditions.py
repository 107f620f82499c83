"""A task's ``exitConditions``: what the job does when the task exits with a code
(``exitCodes``, then ``exitCodeRanges``, then ``default``). Only ``jobAction`` is acted on."""

from __future__ import annotations

from typing import Any


def job_action(conditions: dict[str, Any] | None, exit_code: int | None) -> str:
    """``none``, ``disable`` or ``terminate`` for a task that exited with ``exit_code``."""
    if not conditions or exit_code is None:
        return "none"
    for entry in conditions.get("exitCodes") or []:
        if entry.get("code") == exit_code:
            return _action(entry)
    for entry in conditions.get("exitCodeRanges") or []:
        if entry.get("start", 0) <= exit_code <= entry.get("end", 0):
            return _action(entry)
    if exit_code != 0 and conditions.get("default"):
        return (conditions["default"].get("jobAction") or "none").lower()
    return "none"


def _action(entry: dict[str, Any]) -> str:
    return ((entry.get("exitOptions") or {}).get("jobAction") or "none").lower()
