#!/usr/bin/env python3
"""The worker every tier runs: WAA tasks one at a time, one event line per step on stdout.

    python waa_worker.py --worker-id W --task-ids id1,id2 [--test-all-meta PATH]
                         [--result-dir DIR] [--heartbeat-interval SECONDS]

For each task it writes a one-task meta file in WAA's test_all.json shape, runs the WAA client
(``WAA_CLIENT_CMD``, default ``python /client/run.py``) with ``--test_all_meta_path`` and
``--result_dir``, passes the client's output through to stderr, and reads the score WAA writes to
``<result_dir>/**/<task_id>/result.txt``. With ``WAA_CLIENT_BATCH=1`` it runs all its tasks
through one client process instead (WAA's own task loop: one meta file with every task), takes
each task as done when its result.txt appears, and starts a new client for the tasks left if one
exits early. Events (stdout, one line each, flushed at once):

    WAA_EVENT {"event": "started", "ts": 1700000000.0, "worker": "W", "task_ids": [...]}

with events started, task_started, heartbeat, task_result and finished. On SIGTERM it prints
nothing more, kills the client and exits with 143.

Stdlib only and Python 3.8+ compatible: this file is shipped to workers on its own. The controller
side of the protocol is plugins/module_utils/worker_events.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

EVENT_PREFIX = "WAA_EVENT "
DEFAULT_CLIENT_CMD = "python /client/run.py"
DEFAULT_TEST_ALL_META = "/client/evaluation_examples_windows/test_all.json"
DEFAULT_RESULT_DIR = "./results"
RESULT_POLL_S = 0.05
OUTPUT_TAIL_LINES = 20
MAX_TAIL_LINE_CHARS = 300


class EventWriter:
    """Writes event lines straight to the stdout file descriptor.

    One os.write per line keeps lines whole (pipes write up to PIPE_BUF atomically) and leaves
    nothing buffered that a signal handler could half-flush.
    """

    def __init__(self, worker_id: str, on_broken_pipe: Callable[[], None], fd: int = 1) -> None:
        self.worker_id = worker_id
        self.fd = fd
        self.closed = False
        self._lock = threading.Lock()
        self._on_broken_pipe = on_broken_pipe

    def emit(self, event: str, **fields: object) -> None:
        payload = {"event": event, "ts": time.time(), "worker": self.worker_id}
        payload.update(fields)
        data = (EVENT_PREFIX + json.dumps(payload, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self.closed:
                return
            try:
                while data:
                    written = os.write(self.fd, data)
                    data = data[written:]
            except (BrokenPipeError, OSError):
                # The reader (SSH channel, controller) is gone: nobody can use our results.
                self._on_broken_pipe()

    def close(self) -> None:
        self.closed = True


class ClientRun:
    """One WAA client subprocess whose output is forwarded to our stderr."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.tail: collections.deque = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self.last_output_at = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            universal_newlines=True,
            errors="replace",
            bufsize=1,
        )
        self._pump = threading.Thread(target=self._forward_output, daemon=True)
        self._pump.start()

    def _forward_output(self) -> None:
        for line in self.process.stdout:
            self.last_output_at = time.monotonic()
            self.tail.append(line.rstrip("\r\n")[:MAX_TAIL_LINE_CHARS])
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_output_at

    def wait(self) -> int:
        returncode = self.process.wait()
        self._pump.join(timeout=5)
        return returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()


class Worker:
    def __init__(
        self,
        worker_id: str,
        task_ids: list[str],
        domains: dict[str, str],
        result_dir: str,
        heartbeat_interval: float,
        client_cmd: str,
        batch: bool = False,
    ) -> None:
        self.worker_id = worker_id
        self.task_ids = task_ids
        self.domains = domains
        self.result_dir = Path(result_dir)
        self.heartbeat_interval = heartbeat_interval
        self.client_argv = shlex.split(client_cmd)
        self.batch = batch
        self.events = EventWriter(worker_id, on_broken_pipe=lambda: self.terminate(141))
        self.current_task: str | None = None
        self.current_client: ClientRun | None = None
        self._stop_heartbeat = threading.Event()
        self._meta_dir = ""

    def run(self) -> int:
        self.result_dir.mkdir(parents=True, exist_ok=True)
        self._meta_dir = tempfile.mkdtemp(prefix="waa-worker-")
        self.events.emit("started", task_ids=list(self.task_ids))
        heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        heartbeat.start()
        completed = 0
        try:
            if self.batch:
                completed = self.run_batched()
            else:
                for task_id in self.task_ids:
                    self.run_task(task_id)
                    completed += 1
        finally:
            self._stop_heartbeat.set()
            shutil.rmtree(self._meta_dir, ignore_errors=True)
        self.events.emit("finished", completed=completed)
        return 0

    def run_task(self, task_id: str) -> None:
        domain = self.domains.get(task_id)
        self._begin(task_id)
        started = time.monotonic()
        if domain is None:
            outcome = ("error", 0.0, "task id not found in the test_all meta file")
        else:
            outcome = self._run_client(task_id, domain)
        self._report(task_id, started, outcome)

    def run_batched(self) -> int:
        """All tasks through as few client processes as possible (one, unless one exits
        early); the same events as one process per task."""
        remaining = []
        for task_id in self.task_ids:
            if task_id in self.domains:
                remaining.append(task_id)
            else:
                self.run_task(task_id)  # reported as an error without starting a client
        done = len(self.task_ids) - len(remaining)
        while remaining:
            ran, remaining = self._run_client_batch(remaining)
            done += ran
        return done

    def _run_client_batch(self, task_ids: list[str]) -> tuple[int, list[str]]:
        """Run one client over ``task_ids``; (tasks reported, tasks still to run)."""
        meta: dict[str, list[str]] = {}
        for task_id in task_ids:
            meta.setdefault(self.domains[task_id], []).append(task_id)
        order = [task_id for ids in meta.values() for task_id in ids]  # WAA's own order
        meta_path = os.path.join(self._meta_dir, f"batch-{len(os.listdir(self._meta_dir))}.json")
        with open(meta_path, "w") as handle:
            json.dump(meta, handle)
        argv = self.client_argv + [
            "--test_all_meta_path",
            meta_path,
            "--result_dir",
            str(self.result_dir),
        ]
        index = 0
        self._begin(order[0])
        started = time.monotonic()
        try:
            client = ClientRun(argv, dict(os.environ))
        except OSError as exc:
            self._report(
                order[0],
                started,
                ("error", 0.0, f"could not start the WAA client {argv[0]!r}: {exc}"),
            )
            return 1, order[1:]
        self.current_client = client
        returncode = None
        while index < len(order):
            if returncode is None:
                try:
                    returncode = client.process.wait(timeout=RESULT_POLL_S)
                    client.wait()
                except subprocess.TimeoutExpired:
                    pass
            if result_written(self.result_dir, order[index]):
                self._report(order[index], started, read_result(self.result_dir, order[index]))
                index += 1
                if index < len(order):
                    self._begin(order[index])
                    started = time.monotonic()
                continue
            if returncode is not None:
                break
        self.current_client = None
        if index == len(order):
            return index, []
        if returncode != 0:
            output = "\n".join(client.tail) or "(no output)"
            error = f"WAA client exited with code {returncode}:\n{output}"
        else:
            error = (
                f"WAA client exited 0 but wrote no result.txt for this task under {self.result_dir}"
            )
        self._report(order[index], started, ("error", 0.0, error))
        return index + 1, order[index + 1 :]

    def _begin(self, task_id: str) -> None:
        self.current_task = task_id
        self.events.emit("task_started", task_id=task_id, domain=self.domains.get(task_id))

    def _report(self, task_id: str, started: float, outcome: tuple[str, float, str | None]) -> None:
        status, score, error = outcome
        self.current_task = None
        self.events.emit(
            "task_result",
            task_id=task_id,
            domain=self.domains.get(task_id),
            status=status,
            score=score,
            duration_s=round(time.monotonic() - started, 3),
            error=error,
        )

    def _run_client(self, task_id: str, domain: str) -> tuple[str, float, str | None]:
        meta_path = os.path.join(self._meta_dir, task_id + ".json")
        with open(meta_path, "w") as handle:
            json.dump({domain: [task_id]}, handle)
        argv = self.client_argv + [
            "--test_all_meta_path",
            meta_path,
            "--result_dir",
            str(self.result_dir),
        ]
        try:
            client = ClientRun(argv, dict(os.environ))
        except OSError as exc:
            return "error", 0.0, f"could not start the WAA client {argv[0]!r}: {exc}"
        self.current_client = client
        returncode = client.wait()
        self.current_client = None
        if returncode != 0:
            output = "\n".join(client.tail) or "(no output)"
            return "error", 0.0, f"WAA client exited with code {returncode}:\n{output}"
        return read_result(self.result_dir, task_id)

    def _heartbeat_loop(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_interval):
            client = self.current_client
            self.events.emit(
                "heartbeat",
                task_id=self.current_task,
                client_idle_s=round(client.idle_seconds(), 1) if client else None,
            )

    def terminate(self, exit_code: int) -> None:
        """Stop at once: no more events, no client left behind."""
        self.events.close()
        client = self.current_client
        if client is not None:
            client.kill()
        os._exit(exit_code)


def result_written(result_dir: Path, task_id: str) -> bool:
    """Has the client written this task's score (a whole line, not a file still empty)?"""
    for path in Path(result_dir).glob(f"**/{task_id}/result.txt"):
        with contextlib.suppress(OSError):
            if path.read_text().endswith("\n"):
                return True
    return False


def read_result(result_dir: Path, task_id: str) -> tuple[str, float, str | None]:
    """(status, score, error) from the newest ``<result_dir>/**/<task_id>/result.txt``."""
    candidates = sorted(
        Path(result_dir).glob(f"**/{task_id}/result.txt"),
        key=lambda path: path.stat().st_mtime,
    )
    if not candidates:
        return (
            "error",
            0.0,
            f"WAA client exited 0 but wrote no result.txt for this task under {result_dir}",
        )
    text = candidates[-1].read_text().strip()
    try:
        score = float(text)
    except ValueError:
        return "error", 0.0, f"unreadable score {text[:100]!r} in {candidates[-1]}"
    # WAA scores are in [0, 1]; only a full score counts as solved, partial credit is kept in score.
    return ("success" if score >= 1.0 else "fail"), score, None


def load_domains(meta_path: str) -> dict[str, str]:
    """Map task id -> domain from a WAA test_all.json (domain -> list of task ids)."""
    with open(meta_path) as handle:
        meta = json.load(handle)
    if not isinstance(meta, dict):
        raise ValueError("expected a JSON object mapping domain -> list of task ids")
    domains = {}
    for domain, ids in meta.items():
        if not isinstance(ids, list):
            raise ValueError(f"domain {domain!r} does not map to a list of task ids")
        for task_id in ids:
            domains[str(task_id)] = domain
    return domains


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run WAA tasks and report structured events.")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--task-ids", required=True, help="comma-separated WAA task ids")
    parser.add_argument(
        "--test-all-meta",
        default=os.environ.get("WAA_TEST_ALL_META", DEFAULT_TEST_ALL_META),
        help="WAA test_all.json: domain -> list of task ids",
    )
    parser.add_argument(
        "--result-dir", default=os.environ.get("WAA_RESULT_DIR", DEFAULT_RESULT_DIR)
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=float(os.environ.get("HEARTBEAT_INTERVAL", "30")),
    )
    args = parser.parse_args(argv)
    args.task_ids = [t.strip() for t in args.task_ids.split(",") if t.strip()]
    if not args.task_ids:
        parser.error("--task-ids names no task")
    if args.heartbeat_interval <= 0:
        parser.error("--heartbeat-interval must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        domains = load_domains(args.test_all_meta)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"waa_worker: cannot read {args.test_all_meta}: {exc}\n")
        return 2
    worker = Worker(
        worker_id=args.worker_id,
        task_ids=args.task_ids,
        domains=domains,
        result_dir=args.result_dir,
        heartbeat_interval=args.heartbeat_interval,
        client_cmd=os.environ.get("WAA_CLIENT_CMD", DEFAULT_CLIENT_CMD),
        batch=os.environ.get("WAA_CLIENT_BATCH", "").lower() in ("1", "true", "yes"),
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.terminate(143))
    signal.signal(signal.SIGHUP, lambda signum, frame: worker.terminate(129))
    signal.signal(signal.SIGINT, lambda signum, frame: worker.terminate(130))
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
