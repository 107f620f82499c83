"""Simulated containers: a job's command runs as a local process (``bash -c <command>``) in a
working directory of its own, with the environment a container of its image would have, its
stdout and stderr going to the run's ``user_logs/std_log.txt``; and the workload faults that
make such a container misbehave.

The image's environment comes from the registry's record of it (``resolve_image``); the WAA
image (a repository ending in ``winarena``) also gets what the WAA client needs here:
``WAA_CLIENT_CMD`` runs the stand-in (``localazure.workload.waa_standin``) and
``WAA_TEST_ALL_META`` names the synthetic 154-task set, and ``WAA_CLIENT_BATCH=1`` has the worker
run a job's tasks through one stand-in process (WAA's own task loop). ``PATH`` starts with the emulator's own
Python environment, so ``python`` in a command is a Python with the project's packages.

Workload faults (``POST /_localazure/ml/faults``) are taken by the first job whose name matches
their ``job`` regex when it gets a node:

- ``never_starts``: the job reaches Running but its process never starts: no output at all
- ``pull_fails``: the image pull fails with a transient registry error
- ``stuck``: the WAA client hangs on the job's first task (``WAA_STANDIN_STUCK_TASK``); for a
  command without ``--task-ids``, the process is frozen (SIGSTOP) after ``after_s``
- ``crash``: the container is killed (SIGKILL, exit code 137) after ``after_s`` (default 1)
- ``preempt``: the node is preempted after ``after_s`` (default 1): process killed, node gone
- ``slow_start``: Preparing takes ``delay_s`` longer (default 5)

Processes are Linux process groups; on start the emulator kills any it left behind (found by
the ``LOCALAZURE_ML_CONTAINER_OF`` marker in their environment).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from localazure.core.context import Context
from localazure.workload.taskset import SYNTHETIC_TEST_ALL

FAULT_KIND = "ml-fault"
FAULTS = ("never_starts", "pull_fails", "stuck", "crash", "preempt", "slow_start")
DEFAULT_AFTER_S = 1.0
DEFAULT_DELAY_S = 5.0
MARKER = "LOCALAZURE_ML_CONTAINER_OF"
WAA_REPOSITORY_SUFFIX = "winarena"
_TASK_IDS = re.compile(r"--task-ids(?:=|\s+)['\"]?([^\s'\",]+)")
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What the WAA container prints when it starts on a node without KVM (TrustedLaunch, or a VM
# size without nested virtualization), before it exits with code 1.
KVM_UNAVAILABLE_LOG = """\
Starting WinArena...
Checking for KVM acceleration...
ERROR: KVM acceleration is not available: /dev/kvm not found.
ERROR: nested virtualization is not available on this node, so the Windows VM cannot start.
{reason}
"""


# -- faults ---------------------------------------------------------------------------------------


def add_fault(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("fault")
    if kind not in FAULTS:
        raise ValueError(f"'fault' must be one of {list(FAULTS)}, not {kind!r}")
    pattern = spec.get("job", ".*")
    try:
        re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f"'job' must be a regular expression: {err}") from None
    times = spec.get("times", 1)
    if not isinstance(times, int) or times < 1:
        raise ValueError(f"'times' must be a whole number >= 1, not {times!r}")
    fault = {
        "id": uuid.uuid4().hex[:12],
        "fault": kind,
        "job": pattern,
        "times": times,
        "after_s": _seconds(spec, "after_s", DEFAULT_AFTER_S),
        "delay_s": _seconds(spec, "delay_s", DEFAULT_DELAY_S),
        "hits": 0,
    }
    ctx.store.put(FAULT_KIND, fault["id"], fault)
    return fault


def _seconds(spec: dict[str, Any], name: str, default: float) -> float:
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


# -- the container's environment ------------------------------------------------------------------


def is_waa_image(image_ref: str) -> bool:
    repository = image_ref.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return repository.lower().endswith(WAA_REPOSITORY_SUFFIX)


def needs_nested_virtualization(image_ref: str) -> bool:
    """The WAA image runs a Windows VM under KVM; other images need nothing special."""
    return is_waa_image(image_ref)


def image_environment(image_ref: str, image: dict[str, Any]) -> dict[str, str]:
    """Environment variables the image defines (``Env`` of its config), plus what the WAA
    image needs in the emulator."""
    env: dict[str, str] = {}
    declared = image.get("env") or (image.get("config") or {}).get("Env") or []
    if isinstance(declared, dict):
        env.update({str(k): str(v) for k, v in declared.items()})
    else:
        for item in declared:
            name, _, value = str(item).partition("=")
            env[name] = value
    if is_waa_image(image_ref):
        env.setdefault("WAA_CLIENT_CMD", f"{sys.executable} -m localazure.workload.waa_standin")
        env.setdefault("WAA_TEST_ALL_META", str(SYNTHETIC_TEST_ALL))
        # One stand-in process per job runs the job's tasks, as WAA's own task loop does.
        env.setdefault("WAA_CLIENT_BATCH", "1")
    env.pop("PATH", None)
    return env


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
    return {}


def freezes_process(fault: dict[str, Any] | None, command: str) -> bool:
    """A ``stuck`` fault on a command that names no WAA task freezes the whole process."""
    return bool(fault and fault["fault"] == "stuck" and not first_task_id(command))


def container_environment(
    state_dir: Path,
    workdir: Path,
    *layers: dict[str, str],
) -> dict[str, str]:
    """The process environment: a clean base, then each layer in order (later layers win)."""
    env = {
        "HOME": str(workdir),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": str(workdir),
    }
    for layer in layers:
        env.update(layer)
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{python_bin}:{os.environ.get('PATH', _SYSTEM_PATH)}"
    env[MARKER] = str(state_dir)
    return env


# -- processes ------------------------------------------------------------------------------------


class ContainerRuntime:
    """The processes of running containers, by run key. Lives in the emulator process only."""

    def __init__(self) -> None:
        self._processes: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(
        self, key: str, command: str, env: dict[str, str], workdir: Path, log_path: Path
    ) -> int:
        workdir.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._processes[key] = process
        return process.pid

    def has(self, key: str) -> bool:
        with self._lock:
            return key in self._processes

    def running_keys(self) -> list[str]:
        with self._lock:
            return list(self._processes)

    def exit_code(self, key: str) -> int | None:
        """None while running; a killed process reports 128 + signal, as containers do."""
        with self._lock:
            process = self._processes[key]
        code = process.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def signal(self, key: str, sig: int) -> None:
        with self._lock:
            process = self._processes.get(key)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    def terminate(self, key: str) -> None:
        """SIGTERM (and SIGCONT, so that a frozen process can act on it)."""
        self.signal(key, signal.SIGTERM)
        self.signal(key, signal.SIGCONT)

    def kill(self, key: str) -> None:
        self.signal(key, signal.SIGKILL)

    def forget(self, key: str) -> None:
        with self._lock:
            process = self._processes.pop(key, None)
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def stop_all(self) -> None:
        for key in self.running_keys():
            self.forget(key)


def kill_leftovers(state_dir: Path) -> int:
    """Kill container processes a previous run of this emulator left behind; return how many."""
    marker = f"{MARKER}={state_dir}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed
