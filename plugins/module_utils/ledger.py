"""The run ledger: every task's final result exactly once, on disk, so that a re-run resumes.

One SQLite file in WAL mode. ``results`` has one row per task (task_id is the primary key) and is
only ever inserted into with INSERT OR IGNORE: the first final result wins and a later one is
counted in ``duplicates_ignored``. Every write is its own committed transaction, so a controller
killed at any moment leaves a consistent ledger behind.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS run_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    domain TEXT,
    status TEXT NOT NULL CHECK (status IN ('success', 'fail', 'error')),
    score REAL NOT NULL,
    duration_s REAL,
    error TEXT,
    job_key TEXT,
    worker TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_key TEXT PRIMARY KEY,
    handle TEXT,
    task_ids TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    node_started_at REAL,
    node_released_at REAL,
    ended_at REAL,
    state TEXT NOT NULL,
    failure_kind TEXT,
    failure_code TEXT,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS job_offers (
    job_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    task_ids TEXT NOT NULL,
    PRIMARY KEY (job_key, seq)
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    job_key TEXT NOT NULL,
    job_handle TEXT,
    worker TEXT,
    started_at REAL,
    ended_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    failure_kind TEXT,
    failure_code TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_task ON attempts (task_id);
CREATE TABLE IF NOT EXISTS retries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    job_key TEXT NOT NULL,
    handle TEXT,
    kind TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    requeued_task_ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"  # interrupted (Ctrl-C, SIGTERM)
    FAILED = "failed"  # a permanent failure
    STOPPED = "stopped"  # the tier stayed unhealthy
    CRASHED = "crashed"  # anything else


class TaskStatus(StrEnum):
    """A task's final result."""

    SUCCESS = "success"
    FAIL = "fail"
    ERROR = "error"


class JobRecordState(StrEnum):
    """The engine's own states of a job in the ledger, before the tier knows it; afterwards the
    state is the tier's (``tiers.base.JobState``)."""

    SUBMITTED = "SUBMITTED"  # recorded before the submit, so a kill mid-submit leaves a trace
    SUBMIT_FAILED = "SUBMIT_FAILED"


def job_ended(state: str) -> bool:
    """Whether a job in this ledger state is over."""
    if state in (JobRecordState.SUBMITTED, JobRecordState.SUBMIT_FAILED):
        return state == JobRecordState.SUBMIT_FAILED
    return JobState(state).terminal


class CancelCode(StrEnum):
    """The failure code of a job the engine cancelled itself."""

    BY_ENGINE = "CancelledByEngine"
    ORPHAN = "OrphanCancelled"


class LedgerMismatch(Exception):
    """The ledger belongs to a run with a different configuration."""


@dataclass(frozen=True)
class RunMeta:
    run_id: str
    config_fingerprint: str
    started_at: float
    sessions: int
    status: str
    # Random per ledger: job names built from it never collide with the jobs of an earlier
    # ledger that used the same run id.
    instance: str = ""


@dataclass(frozen=True)
class TaskResultRow:
    task_id: str
    domain: str | None
    status: str
    score: float
    duration_s: float | None
    error: str | None
    job_key: str | None
    worker: str | None
    recorded_at: float


@dataclass(frozen=True)
class JobRow:
    job_key: str
    handle: str | None
    task_ids: list[str]
    submitted_at: float
    node_started_at: float | None
    node_released_at: float | None
    ended_at: float | None
    state: str
    failure_kind: str | None
    failure_code: str | None
    reason: str | None


@dataclass(frozen=True)
class AttemptRow:
    task_id: str
    job_key: str
    job_handle: str | None
    worker: str | None
    started_at: float | None
    ended_at: float
    outcome: str
    failure_kind: str | None
    failure_code: str | None
    reason: str | None


_JOB_UPDATABLE = frozenset(
    {
        "handle",
        "node_started_at",
        "node_released_at",
        "ended_at",
        "state",
        "failure_kind",
        "failure_code",
        "reason",
    }
)


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; multi-statement records use explicit transactions.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # run metadata -------------------------------------------------------------------------

    def init_run(
        self, run_id: str, config_fingerprint: str, started_at: float, selection: str = ""
    ) -> RunMeta:
        """Create the run, or resume it (counting a new session) if it already exists.
        ``selection`` (the fingerprint of the tasks chosen, a part of the configuration's) is
        recorded so that a run of other tasks is refused before its infrastructure is made
        (``selection``).

        Raises LedgerMismatch when the ledger records a different run or configuration.
        """
        existing = self.run_meta()
        if existing is None:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO run_meta (key, value) VALUES (?, ?)",
                [
                    ("run_id", run_id),
                    ("config_fingerprint", config_fingerprint),
                    ("started_at", repr(started_at)),
                    ("sessions", "1"),
                    ("status", RunStatus.RUNNING.value),
                    ("instance", uuid.uuid4().hex[:6]),
                    ("selection", selection),
                ],
            )
            self._db.execute("COMMIT")
            meta = self.run_meta()
            if meta is None:
                raise AssertionError("meta is not set")
            return meta
        if existing.run_id != run_id or existing.config_fingerprint != config_fingerprint:
            raise LedgerMismatch(
                f"ledger {self.path} belongs to run {existing.run_id!r} "
                f"(config {existing.config_fingerprint!r}), not run {run_id!r} "
                f"(config {config_fingerprint!r}); use another ledger path to start a new run "
                "or the same settings to resume"
            )
        self._db.execute(
            "UPDATE run_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'sessions'"
        )
        self.set_status(RunStatus.RUNNING)
        meta = self.run_meta()
        if meta is None:
            raise AssertionError("meta is not set")
        return meta

    def run_meta(self) -> RunMeta | None:
        rows = dict(self._db.execute("SELECT key, value FROM run_meta").fetchall())
        if "run_id" not in rows:
            return None
        return RunMeta(
            run_id=rows["run_id"],
            config_fingerprint=rows["config_fingerprint"],
            started_at=float(rows["started_at"]),
            sessions=int(rows.get("sessions", "1")),
            status=rows.get("status", RunStatus.RUNNING.value),
            instance=rows.get("instance", ""),
        )

    def selection(self) -> str:
        """The fingerprint of the tasks the run was made for ("" when not recorded)."""
        return self._meta("selection") or ""

    def record_node_seconds(self, session: int, seconds: float) -> None:
        """The node time a session measured on its tier (committed at once)."""
        self._set_meta(f"node_seconds.{session}", repr(float(seconds)))

    def record_unobserved_node_seconds(self, session: int, seconds: float) -> None:
        """Node time nobody measured before this session started (while no controller ran),
        as the tier estimated it."""
        self._set_meta(f"node_seconds.gap.{session}", repr(float(seconds)))

    def record_node_sample(self, session: int, at: float, nodes: int) -> None:
        """The last node count a session read, and when: where the next session's estimate of
        the unobserved time starts."""
        self._set_meta(f"node_sample.{session}", json.dumps({"at": at, "nodes": nodes}))

    def last_node_sample(self, before_session: int) -> tuple[float, int] | None:
        """(when, nodes) of the latest sample of a session before this one."""
        for session in range(before_session - 1, 0, -1):
            value = self._meta(f"node_sample.{session}")
            if value is not None:
                sample = json.loads(value)
                return float(sample["at"]), int(sample["nodes"])
        return None

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM run_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO run_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def node_seconds(self, *, excluding_session: int | None = None) -> float:
        """Measured node time of all sessions (or all but one)."""
        rows = self._db.execute(
            "SELECT key, value FROM run_meta WHERE key LIKE 'node\\_seconds.%' ESCAPE '\\'"
        ).fetchall()
        skip = f"node_seconds.{excluding_session}"
        return sum(float(value) for key, value in rows if key != skip)

    def set_status(self, status: RunStatus | str) -> None:
        self._set_meta("status", str(status))

    # results -------------------------------------------------------------------------------

    def record_result(
        self,
        task_id: str,
        status: str,
        score: float,
        *,
        domain: str | None = None,
        duration_s: float | None = None,
        error: str | None = None,
        job_key: str | None = None,
        worker: str | None = None,
        recorded_at: float | None = None,
    ) -> bool:
        """Record a task's final result. True if recorded, False if it already had one."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO results (task_id, domain, status, score, duration_s, "
                "error, job_key, worker, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    domain,
                    status,
                    float(score),
                    duration_s,
                    error,
                    job_key,
                    worker,
                    time.time() if recorded_at is None else recorded_at,
                ),
            )
            inserted = cursor.rowcount == 1
            if not inserted:
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES ('duplicates_ignored', 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + 1"
                )
            self._db.execute("COMMIT")
        except BaseException:
            # A Ctrl-C can land after the COMMIT ran: then there is nothing to roll back.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return inserted

    @property
    def duplicates_ignored(self) -> int:
        row = self._db.execute(
            "SELECT value FROM counters WHERE name = 'duplicates_ignored'"
        ).fetchone()
        return int(row[0]) if row else 0

    def result(self, task_id: str) -> TaskResultRow | None:
        row = self._db.execute("SELECT * FROM results WHERE task_id = ?", (task_id,)).fetchone()
        return TaskResultRow(*row) if row else None

    def results(self) -> dict[str, TaskResultRow]:
        rows = self._db.execute("SELECT * FROM results ORDER BY recorded_at, rowid").fetchall()
        return {row[0]: TaskResultRow(*row) for row in rows}

    def pending(self, task_ids: Iterable[str]) -> list[str]:
        """The given tasks that have no final result yet, in the given order."""
        done = {row[0] for row in self._db.execute("SELECT task_id FROM results")}
        return [task_id for task_id in task_ids if task_id not in done]

    # jobs ----------------------------------------------------------------------------------

    def record_job_submitted(
        self, job_key: str, handle: str | None, task_ids: Sequence[str], submitted_at: float
    ) -> None:
        self._db.execute(
            "INSERT INTO jobs (job_key, handle, task_ids, submitted_at, state) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                job_key,
                handle,
                json.dumps(list(task_ids)),
                submitted_at,
                JobRecordState.SUBMITTED.value,
            ),
        )

    def update_job(self, job_key: str, **fields: Any) -> None:
        unknown = set(fields) - _JOB_UPDATABLE
        if unknown:
            raise ValueError(f"not a job field: {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [str(v) if isinstance(v, StrEnum) else v for v in fields.values()]
        self._db.execute(f"UPDATE jobs SET {assignments} WHERE job_key = ?", (*values, job_key))

    def record_offer(self, job_key: str, seq: int, task_ids: Sequence[str]) -> None:
        """Tasks handed to a running job through its task feed (entry ``seq``): the job holds
        them from now on (its ``task_ids`` grow), recorded before the entry is written."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT task_ids FROM jobs WHERE job_key = ?", (job_key,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no job {job_key!r} in the ledger")
            self._db.execute(
                "INSERT INTO job_offers (job_key, seq, task_ids) VALUES (?, ?, ?)",
                (job_key, seq, json.dumps(list(task_ids))),
            )
            held = json.loads(row[0]) + list(task_ids)
            self._db.execute(
                "UPDATE jobs SET task_ids = ? WHERE job_key = ?", (json.dumps(held), job_key)
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def offers(self, job_key: str) -> list[list[str]]:
        """The task feed entries written for a job, entry 1 first."""
        rows = self._db.execute(
            "SELECT task_ids FROM job_offers WHERE job_key = ? ORDER BY seq", (job_key,)
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def jobs(self) -> list[JobRow]:
        rows = self._db.execute(
            "SELECT job_key, handle, task_ids, submitted_at, node_started_at, node_released_at, "
            "ended_at, state, failure_kind, failure_code, reason FROM jobs "
            "ORDER BY submitted_at, rowid"
        ).fetchall()
        return [JobRow(row[0], row[1], json.loads(row[2]), *row[3:]) for row in rows]

    def accepted_job_count(self) -> int:
        """Jobs of every session that the tier accepted."""
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state NOT IN (?, ?)",
                (JobRecordState.SUBMITTED.value, JobRecordState.SUBMIT_FAILED.value),
            ).fetchone()[0]
        )

    def job_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    # retries -------------------------------------------------------------------------------

    def record_retry(
        self,
        at: float,
        job_key: str,
        handle: str | None,
        kind: str,
        code: str,
        reason: str,
        requeued_task_ids: Sequence[str],
    ) -> None:
        self._db.execute(
            "INSERT INTO retries (at, job_key, handle, kind, code, reason, requeued_task_ids) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at, job_key, handle, kind, code, reason, json.dumps(list(requeued_task_ids))),
        )

    def retries(self) -> list[dict[str, Any]]:
        """Every retry of every session, in order."""
        rows = self._db.execute(
            "SELECT at, job_key, handle, kind, code, reason, requeued_task_ids FROM retries "
            "ORDER BY id"
        ).fetchall()
        names = ("at", "job_key", "handle", "kind", "code", "reason")
        return [
            {
                **dict(zip(names, row[:6], strict=True)),
                "requeued_task_ids": tuple(json.loads(row[6])),
            }
            for row in rows
        ]

    # attempts ------------------------------------------------------------------------------

    def record_attempt(
        self,
        task_id: str,
        job_key: str,
        *,
        outcome: str,
        ended_at: float,
        job_handle: str | None = None,
        worker: str | None = None,
        started_at: float | None = None,
        failure_kind: str | None = None,
        failure_code: str | None = None,
        reason: str | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO attempts (task_id, job_key, job_handle, worker, started_at, ended_at, "
            "outcome, failure_kind, failure_code, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                job_key,
                job_handle,
                worker,
                started_at,
                ended_at,
                outcome,
                failure_kind,
                failure_code,
                reason,
            ),
        )

    def attempts(self, task_id: str | None = None) -> list[AttemptRow]:
        query = (
            "SELECT task_id, job_key, job_handle, worker, started_at, ended_at, outcome, "
            "failure_kind, failure_code, reason FROM attempts"
        )
        if task_id is None:
            rows = self._db.execute(query + " ORDER BY id").fetchall()
        else:
            rows = self._db.execute(query + " WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()
        return [AttemptRow(*row) for row in rows]

    def attempt_count(self, task_id: str) -> int:
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM attempts WHERE task_id = ?", (task_id,)
            ).fetchone()[0]
        )


def config_fingerprint(settings: dict[str, Any]) -> str:
    """A stable short digest of the settings that make results comparable (model, task set,
    image...); resuming with a different fingerprint is refused."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
