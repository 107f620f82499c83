"""A tier that runs the real worker script as local subprocesses.

Used for development and for the engine's tests: each job is one ``worker/waa_worker.py`` process
(in its own process group) whose WAA client defaults to the stand-in
(``python -m localazure.workload.waa_standin``). Stdout is read by a thread per job so that
``read_new_lines`` never blocks; stderr (the WAA client's log) goes to ``<workdir>/logs``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import WORKER_CRASH
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    BaseTier,
    JobState,
    JobStatus,
    TierContext,
    TierSpec,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.common import (
    TASK_FEED_ENV,
    feed_entry,
    worker_args,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER_SCRIPT = REPO_ROOT / "worker" / "waa_worker.py"
SYNTHETIC_TEST_ALL = REPO_ROOT / "localazure" / "workload" / "data" / "waa_synthetic_test_all.json"
GOLDEN_IMAGE = REPO_ROOT / "localazure" / "workload" / "data" / "golden_image" / "storage"
WORKER_EXITED = "WorkerExited"


@dataclass
class _LocalJob:
    job_key: str
    process: subprocess.Popen[str]
    started_at: float
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    read_upto: int = 0
    returncode: int | None = None
    released_at: float | None = None
    cancelled: bool = False
    pump: threading.Thread | None = None


class LocalTier(BaseTier):
    name = "local"
    failure_codes: Mapping[str, str] = {WORKER_EXITED.lower(): WORKER_CRASH}

    def __init__(
        self,
        workdir: str | Path,
        *,
        test_all_meta: str | Path = SYNTHETIC_TEST_ALL,
        client_cmd: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        heartbeat_interval: float = 30.0,
        python: str = sys.executable,
        cancel_grace_s: float = 5.0,
        vm_boot: bool = False,
        task_feed: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.test_all_meta = Path(test_all_meta)
        self.python = python
        self.client_cmd = client_cmd or f"{shlex.quote(python)} -m localazure.workload.waa_standin"
        self.extra_env = dict(extra_env or {})
        self.heartbeat_interval = heartbeat_interval
        self.cancel_grace_s = cancel_grace_s
        # The worker's VM boot (worker/waa_worker.py) on the emulator's stand-in VM and
        # synthetic golden image; off: the tasks start at once.
        self.vm_boot = vm_boot
        # Workers take more tasks from a folder of entries per job (FeedsTasks).
        self.feeds_tasks = task_feed
        self.feed_dir = self.workdir / "feeds"
        self.result_dir = self.workdir / "results"
        self.log_dir = self.workdir / "logs"
        self._jobs: dict[str, _LocalJob] = {}
        self._lock = threading.Lock()

    # what a job runs (overridable) -----------------------------------------------------------

    def worker_argv(self, job_key: str, task_ids: list[str]) -> list[str]:
        return [
            self.python,
            str(WORKER_SCRIPT),
            *worker_args(job_key, task_ids),
            "--test-all-meta",
            str(self.test_all_meta),
            "--result-dir",
            str(self.result_dir),
            "--heartbeat-interval",
            str(self.heartbeat_interval),
        ]

    def job_env(self, job_key: str, task_ids: list[str]) -> dict[str, str]:
        env = dict(os.environ)
        python_path = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        env["PYTHONUNBUFFERED"] = "1"
        env["WAA_CLIENT_CMD"] = self.client_cmd
        env.update(self._vm_env(job_key) if self.vm_boot else {"WAA_VM_BOOT": "0"})
        env.update(self.extra_env)
        if self.feeds_tasks:
            env[TASK_FEED_ENV] = str(self.feed_dir / job_key)
        return env

    def _vm_env(self, job_key: str) -> dict[str, str]:
        """The stand-in VM of one job: a loopback probe address of its own, the synthetic
        golden image, and a directory for the VM's state (its boot count)."""
        address = "127.{}.{}.{}".format(*(1 + secrets.randbelow(254) for _unused in range(3)))
        state = self.workdir / "vm" / job_key
        state.mkdir(parents=True, exist_ok=True)
        return {
            "WAA_VM_BOOT": "1",
            "WAA_VM_START_CMD": f"{shlex.quote(self.python)} -m localazure.workload.waa_vm",
            "WAA_GOLDEN_IMAGE_PATH": str(GOLDEN_IMAGE),
            "WAA_STORAGE_LINK": "",
            "WAA_STANDIN_VM_LISTEN": f"{address}:5000",
            "WAA_PROBE_URL": f"http://{address}:5000/probe",
            "WAA_PROBE_INTERVAL": "0.2",
            "WAA_STANDIN_VM_BOOT_S": "0.05",
            "TMPDIR": str(state),
        }

    # the Tier contract -------------------------------------------------------------------------

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        with self._lock:
            if job_key in self._jobs:  # job_key is the idempotency key
                return job_key
        self.result_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stderr_path = self.log_dir / f"{job_key}.log"
        with open(stderr_path, "w", encoding="utf-8") as stderr:
            process = subprocess.Popen(
                self.worker_argv(job_key, list(task_ids)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self.job_env(job_key, list(task_ids)),
                cwd=str(self.workdir),
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        job = _LocalJob(job_key, process, time.time(), stderr_path)
        job.pump = threading.Thread(
            target=self._pump, args=(job,), name=f"local-tier-{job_key}", daemon=True
        )
        with self._lock:
            self._jobs[job_key] = job
        job.pump.start()
        return job_key

    def offer(self, handle: str, seq: int, task_ids: list[str]) -> None:
        folder = self.feed_dir / handle
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{seq}.json.partial"
        partial.write_bytes(feed_entry(task_ids))
        partial.replace(folder / f"{seq}.json")  # the worker never reads half an entry

    def status(self, handle: str) -> JobStatus:
        job = self._job(handle)
        with self._lock:
            returncode, released_at = job.returncode, job.released_at
        if returncode is None:
            return JobStatus(
                JobState.RUNNING, node_started_at=job.started_at, running_at=job.started_at
            )
        if job.cancelled:
            state, code, message = JobState.CANCELED, None, "canceled on request"
        elif returncode == 0:
            state, code, message = JobState.COMPLETED, None, None
        else:
            state, code = JobState.FAILED, WORKER_EXITED
            message = f"worker exited with code {returncode}: {self._stderr_tail(job)}"
        return JobStatus(state, code, message, job.started_at, released_at)

    def read_new_lines(self, handle: str) -> list[str]:
        job = self._job(handle)
        with self._lock:
            lines = job.lines[job.read_upto :]
            job.read_upto = len(job.lines)
        return lines

    def cancel(self, handle: str) -> None:
        job = self._job(handle)
        if job.process.poll() is not None:
            return
        job.cancelled = True
        _signal_group(job.process, signal.SIGTERM)
        timer = threading.Timer(self.cancel_grace_s, self._kill_if_alive, args=(job,))
        timer.daemon = True
        timer.start()

    def describe(self) -> dict[str, Any]:
        return {"tier": self.name, "workdir": str(self.workdir), "price_per_node_hour": 0.0}

    # housekeeping ----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every job still running and wait for the reader threads."""
        for job in list(self._jobs.values()):
            self._kill_if_alive(job)
        for job in list(self._jobs.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                job.process.wait(timeout=10)
            if job.pump is not None:
                job.pump.join(timeout=10)

    def __enter__(self) -> LocalTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def nodes_left(self) -> int:
        """Worker processes still alive."""
        return sum(1 for job in list(self._jobs.values()) if job.process.poll() is None)

    def pids(self) -> dict[str, int]:
        return {key: job.process.pid for key, job in self._jobs.items()}

    def _job(self, handle: str) -> _LocalJob:
        with self._lock:
            job = self._jobs.get(handle)
        if job is None:
            raise LookupError(f"no local job {handle!r}")
        return job

    def _pump(self, job: _LocalJob) -> None:
        if job.process.stdout is None:
            raise AssertionError("job.process.stdout is not set")
        for line in job.process.stdout:
            with self._lock:
                job.lines.append(line.rstrip("\r\n"))
        job.process.stdout.close()
        returncode = job.process.wait()
        with self._lock:
            job.returncode = returncode
            job.released_at = time.time()

    def _kill_if_alive(self, job: _LocalJob) -> None:
        if job.process.poll() is None:
            _signal_group(job.process, signal.SIGKILL)

    @staticmethod
    def _stderr_tail(job: _LocalJob, lines: int = 15) -> str:
        try:
            text = job.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        return "\n".join(tail) or "(empty log)"


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


ARGUMENT_SPEC = dict(
    test_all_meta=dict(type="path"),
    client_cmd=dict(type="str"),
    vm_boot=dict(type="bool", default=False),
    task_feed=dict(type="bool", default=False),
)


def build(context: TierContext) -> LocalTier:
    """Workers as processes of the controller, under the run's directory."""
    job_env = {**context.job_environment, **context.secret_environment}
    return LocalTier(
        Path(context.state_dir) / "local",
        test_all_meta=context.options.get("test_all_meta") or SYNTHETIC_TEST_ALL,
        client_cmd=context.options.get("client_cmd"),
        extra_env=job_env,
        heartbeat_interval=float(job_env.get("HEARTBEAT_INTERVAL", 30.0)),
        vm_boot=bool(context.options.get("vm_boot")),
        task_feed=bool(context.options.get("task_feed")),
    )


def fingerprint(options: Mapping[str, Any]) -> dict[str, Any]:
    meta = options.get("test_all_meta")
    return {"test_all_meta": os.path.basename(meta) if meta else None}


TIER = TierSpec(name="local", argument_spec=ARGUMENT_SPEC, build=build, fingerprint=fingerprint)
