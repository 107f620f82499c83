# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every input of an evaluation checked before anything is created, each message naming the
setting the way the user wrote it (``eval_workers``, not the action's ``workers``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils import taskset

# (option, smallest allowed value, whether the bound itself is allowed, why)
_BOUNDS: list[tuple[str, float, bool, str]] = [
    ("workers", 1, True, "at least one worker must run"),
    ("max_attempts", 1, True, "every task needs at least one attempt"),
    ("startup_timeout", 0, False, "with no time to start, every job is cancelled before it can"),
    ("stuck_after", 0, False, "with no time between events, every worker is judged stuck"),
    ("poll_interval", 0, False, "jobs are read every poll_interval seconds"),
    ("heartbeat_interval", 0, False, "workers print a heartbeat every heartbeat_interval seconds"),
    ("job_timeout", 0, False, "a job needs time to run"),
]


def check(
    values: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """The selected tasks and every problem found with ``values`` (the eval_run options);
    ``names`` maps an option to the name the user set it by."""
    names = names or {}

    def name(option: str) -> str:
        return names.get(option, option)

    errors = []
    for option, low, inclusive, why in _BOUNDS:
        value = values.get(option)
        if value is None:
            continue
        if value < low or (value == low and not inclusive):
            bound = f"at least {low:g}" if inclusive else f"more than {low:g}"
            errors.append(f"{name(option)} is {value:g}; it must be {bound} ({why})")
    beat, stuck = values.get("heartbeat_interval"), values.get("stuck_after")
    if beat and stuck and beat >= stuck:
        errors.append(
            f"{name('heartbeat_interval')} ({beat:g}s) must be shorter than "
            f"{name('stuck_after')} ({stuck:g}s): a worker between two heartbeats would be "
            "judged stuck"
        )
    max_tasks = values.get("max_tasks")
    if max_tasks is not None and max_tasks < 1:
        errors.append(f"{name('max_tasks')} is {max_tasks}; it must be at least 1 (or unset)")
        max_tasks = None
    tasks: list[tuple[str, str]] = []
    path = values.get("task_set")
    if not path:
        errors.append(f"{name('task_set')} is not set: give the path of WAA's test_all.json")
    elif not Path(path).is_file():
        errors.append(f"{name('task_set')}: {path} does not exist (or is not a file)")
    else:
        try:
            taskset.load(path)
        except json.JSONDecodeError as err:
            errors.append(f"{name('task_set')}: {path} is not valid JSON: {err}")
        except (OSError, ValueError) as err:
            errors.append(f"{name('task_set')}: {path}: {err}")
        else:
            tasks, selection_errors = _select(path, values, max_tasks, name)
            errors += selection_errors
    return tasks, errors


def _select(path, values, max_tasks, name) -> tuple[list[tuple[str, str]], list[str]]:
    pairs = taskset.load(path)
    domains = list(values.get("domains") or [])
    task_ids = list(values.get("task_ids") or [])
    errors = []
    known_domains = {d for d, _task in pairs}
    unknown_domains = sorted(set(domains) - known_domains)
    if unknown_domains:
        errors.append(
            f"{name('domains')}: {', '.join(unknown_domains)} not in {path} "
            f"(its domains: {', '.join(sorted(known_domains))})"
        )
    unknown_ids = [t for t in task_ids if t not in {t for _domain, t in pairs}]
    if unknown_ids:
        errors.append(f"{name('task_ids')}: not in {path}: {', '.join(unknown_ids[:10])}")
    if errors:
        return [], errors
    try:
        return taskset.select_tasks(path, task_ids, domains, max_tasks), []
    except ValueError as err:
        return [], [f"{name('task_ids')}/{name('domains')}: {err}"]
