"""Workload faults: misbehaviour injected into the containers that nodes run, through the admin
API (``POST /_localazure/ml/faults``). A fault is taken by the first workload whose name matches
its ``job`` regex when it gets a node:

- ``never_starts``: the workload reaches Running but its process never starts: no output at all
- ``pull_fails``: the image pull fails with a transient registry error
- ``stuck``: the WAA client hangs on the first task (``WAA_STANDIN_STUCK_TASK``); for a
  command without ``--task-ids``, the process is frozen (SIGSTOP) after ``after_s``
- ``crash``: the container is killed (SIGKILL, exit code 137) after ``after_s`` (default 1)
- ``preempt``: the node is preempted after ``after_s`` (default 1): process killed, node gone
- ``slow_start``: Preparing takes ``delay_s`` longer (default 5)
- ``boot_hang``: the WAA container's Windows VM never finishes booting (its probe never answers)
- ``probe_stops``: the VM stops answering its probe ``after_s`` after it first booted; a restart
  inside the container boots it again
- ``restart_fails``: as ``probe_stops``, and every later boot of the VM hangs
- ``overload``: from ``after_s`` on, the workload drives its node's ``metric`` (``cpu``,
  ``memory`` or ``disk``; default ``cpu``) to 99% in Azure Monitor's figures
  (``localazure.monitor.figures``) for as long as it holds the node

``after_output`` (a regular expression) starts the ``after_s`` clock of ``crash``, ``preempt``
and a freezing ``stuck`` at the first line of the workload's output that matches it instead of
at its start: a test strikes mid-task (``"WAA_EVENT .*task_started"``) however slowly a loaded
machine starts the worker.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from localazure.core.context import Context

FAULT_KIND = "ml-fault"
VM_FAULTS = ("boot_hang", "probe_stops", "restart_fails")
FAULTS = (
    "never_starts",
    "pull_fails",
    "stuck",
    "crash",
    "preempt",
    "slow_start",
    *VM_FAULTS,
    "overload",
)
OVERLOAD_METRICS = ("cpu", "memory", "disk")
DEFAULT_AFTER_S = 1.0
DEFAULT_DELAY_S = 5.0
_TASK_IDS = re.compile(r"--task-ids(?:=|\s+)['\"]?([^\s'\",]+)")


def add_fault(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("fault")
    if kind not in FAULTS:
        raise ValueError(f"'fault' must be one of {list(FAULTS)}, not {kind!r}")
    pattern = regex_option(spec, "job")
    times = spec.get("times", 1)
    if not isinstance(times, int) or times < 1:
        raise ValueError(f"'times' must be a whole number >= 1, not {times!r}")
    fault = {
        "id": uuid.uuid4().hex[:12],
        "fault": kind,
        "job": pattern,
        "times": times,
        "after_s": seconds_option(spec, "after_s", DEFAULT_AFTER_S),
        "delay_s": seconds_option(spec, "delay_s", DEFAULT_DELAY_S),
        "hits": 0,
    }
    if "after_output" in spec:
        fault["after_output"] = regex_option(spec, "after_output")
    if kind == "overload":
        metric = spec.get("metric", "cpu")
        if metric not in OVERLOAD_METRICS:
            raise ValueError(f"'metric' must be one of {list(OVERLOAD_METRICS)}, not {metric!r}")
        fault["metric"] = metric
    ctx.store.put(FAULT_KIND, fault["id"], fault)
    return fault


def regex_option(spec: dict[str, Any], name: str) -> str:
    """A fault's regular expression option (default: match everything)."""
    pattern = spec.get(name, ".*")
    try:
        re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f"'{name}' must be a regular expression: {err}") from None
    return pattern


def seconds_option(spec: dict[str, Any], name: str, default: float) -> float:
    """A fault's duration option: a number of seconds >= 0."""
    value = spec.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"'{name}' must be a number of seconds >= 0, not {value!r}")
    return float(value)


def list_faults(ctx: Context) -> list[dict[str, Any]]:
    return ctx.store.values(FAULT_KIND)


def clear_faults(ctx: Context) -> None:
    ctx.store.delete_prefix(FAULT_KIND, "")


def take_fault(ctx: Context, job_name: str) -> dict[str, Any] | None:
    """The first live fault matching the job, counting one use of it."""
    with ctx.store.transaction():
        for fault in list_faults(ctx):
            if fault["times"] > 0 and re.search(fault["job"], job_name):
                fault["times"] -= 1
                fault["hits"] += 1
                ctx.store.put(FAULT_KIND, fault["id"], fault)
                return fault
    return None


def mark_overload(node: dict[str, Any], fault: dict[str, Any] | None, run: str, now: float) -> bool:
    """An ``overload`` fault taken by ``run`` marks its node (the monitor's figures read it)."""
    if not fault or fault["fault"] != "overload":
        return False
    node["overload"] = {"run": run, "metric": fault["metric"], "from": now + fault["after_s"]}
    return True


def first_task_id(command: str) -> str | None:
    """The first task of the last ``--task-ids`` in the command: the worker's invocation comes
    after the script a heredoc writes, whose own text may mention the option."""
    found = _TASK_IDS.findall(command)
    return found[-1] if found else None


def fault_environment(fault: dict[str, Any] | None, command: str) -> dict[str, str]:
    """Variables that make the WAA stand-in misbehave as the fault asks."""
    if fault and fault["fault"] == "stuck":
        task_id = first_task_id(command)
        if task_id:
            return {"WAA_STANDIN_STUCK_TASK": task_id}
    if fault and fault["fault"] in VM_FAULTS:
        return {
            "WAA_STANDIN_VM_FAULT": fault["fault"],
            "WAA_STANDIN_VM_FAULT_AFTER_S": f"{fault['after_s']:g}",
        }
    return {}


def fault_due(
    fault: dict[str, Any] | None,
    record: dict[str, Any],
    started_at: float,
    now: float,
    output_matches: Callable[[str], bool],
) -> bool:
    """Whether a timed fault strikes now: ``after_s`` after the workload started, or after its
    output first matched ``after_output`` (remembered in ``record["fault_armed_at"]``)."""
    if not fault:
        return False
    pattern = fault.get("after_output")
    if pattern:
        if record.get("fault_armed_at") is None:
            if not output_matches(pattern):
                return False
            record["fault_armed_at"] = now
        started_at = record["fault_armed_at"]
    return now - started_at >= fault["after_s"]


def freezes_process(fault: dict[str, Any] | None, command: str) -> bool:
    """A ``stuck`` fault on a command that names no WAA task freezes the whole process."""
    return bool(fault and fault["fault"] == "stuck" and not first_task_id(command))
