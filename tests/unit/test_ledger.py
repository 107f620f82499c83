from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (
    Ledger,
    LedgerMismatch,
    config_fingerprint,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_first_final_result_wins_and_duplicates_are_counted(tmp_path):
    with Ledger(tmp_path / "run.db") as ledger:
        ledger.init_run("run-1", "fp", 100.0)
        assert ledger.record_result("t1", "success", 1.0, domain="vlc", job_key="j1") is True
        assert ledger.record_result("t1", "fail", 0.0, domain="vlc", job_key="j2") is False
        assert ledger.record_result("t1", "error", 0.0, error="late") is False
        row = ledger.result("t1")
        assert (row.status, row.score, row.job_key) == ("success", 1.0, "j1")
        assert ledger.duplicates_ignored == 2
    raw = sqlite3.connect(tmp_path / "run.db")
    assert raw.execute("SELECT COUNT(*) FROM results WHERE task_id='t1'").fetchone()[0] == 1
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_resumes_with_pending_tasks_in_order(tmp_path):
    path = tmp_path / "run.db"
    with Ledger(path) as ledger:
        ledger.init_run("run-1", "fp", 100.0)
        ledger.record_result("b", "fail", 0.0)
    with Ledger(path) as ledger:
        meta = ledger.init_run("run-1", "fp", 200.0)
        assert meta.sessions == 2 and meta.started_at == 100.0
        assert ledger.pending(["a", "b", "c"]) == ["a", "c"]


def test_resume_with_other_configuration_is_refused(tmp_path):
    path = tmp_path / "run.db"
    with Ledger(path) as ledger:
        ledger.init_run("run-1", "fp-a", 1.0)
    with Ledger(path) as ledger, pytest.raises(LedgerMismatch, match="another ledger path"):
        ledger.init_run("run-1", "fp-b", 2.0)


def test_the_selection_is_kept_from_the_first_session(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        assert ledger.selection() == ""
        ledger.init_run("run", "cfg", 1.0, selection="tasks-a")
        ledger.init_run("run", "cfg", 2.0, selection="tasks-b")  # a later session
        assert ledger.selection() == "tasks-a"
    with Ledger(tmp_path / "old.db") as ledger:
        ledger.init_run("run", "cfg", 1.0)  # a ledger of before the selection was recorded
        assert ledger.selection() == ""


def test_jobs_and_attempts_are_recorded(tmp_path):
    with Ledger(tmp_path / "run.db") as ledger:
        ledger.init_run("r", "", 0.0)
        ledger.record_job_submitted("r-0001", None, ["a", "b"], 10.0)
        ledger.update_job("r-0001", handle="aml-job-1", node_started_at=12.0, state="RUNNING")
        ledger.record_attempt(
            "a",
            "r-0001",
            outcome="error",
            ended_at=20.0,
            failure_kind="transient",
            failure_code="Stuck",
            reason="no event for 600s",
        )
        ledger.record_attempt("a", "r-0002", outcome="success", ended_at=30.0)
        job = ledger.jobs()[0]
        assert (job.handle, job.task_ids, job.node_started_at, job.state) == (
            "aml-job-1",
            ["a", "b"],
            12.0,
            "RUNNING",
        )
        assert ledger.attempt_count("a") == 2 and ledger.attempt_count("b") == 0
        assert [a.failure_code for a in ledger.attempts("a")] == ["Stuck", None]
        with pytest.raises(ValueError, match="not a job field"):
            ledger.update_job("r-0001", task_ids="x")


def test_fingerprint_is_stable_and_order_independent():
    assert config_fingerprint({"a": 1, "b": [1, 2]}) == config_fingerprint({"b": [1, 2], "a": 1})
    assert config_fingerprint({"a": 1}) != config_fingerprint({"a": 2})


def test_survives_a_writer_killed_mid_stream(tmp_path):
    """Each record is its own transaction: SIGKILL loses at most the record being written."""
    path = tmp_path / "run.db"
    script = textwrap.dedent(
        f"""
        import sys, os, signal
        sys.path[:0] = [{str(REPO_ROOT / "collections")!r}, {str(REPO_ROOT)!r}]
        from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
        ledger = Ledger({str(path)!r})
        ledger.init_run("r", "", 0.0)
        for i in range(10_000):
            ledger.record_result(f"t{{i}}", "success", 1.0)
            if i == 150:
                print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait()
    with Ledger(path) as ledger:
        results = ledger.results()
        count = len(results)
        assert count >= 151
        # No gaps: records are committed in order, one at a time.
        assert set(results) == {f"t{i}" for i in range(count)}
        assert ledger.pending([f"t{i}" for i in range(count + 5)]) == [
            f"t{i}" for i in range(count, count + 5)
        ]


class _InterruptAfterCommit:
    """The ledger's connection, with a Ctrl-C arriving just after a COMMIT ran."""

    def __init__(self, db):
        self._db = db

    def execute(self, sql, *args):
        cursor = self._db.execute(sql, *args)
        if sql == "COMMIT":
            raise KeyboardInterrupt
        return cursor

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_ctrl_c_just_after_a_result_was_committed_stays_a_ctrl_c(tmp_path):
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.init_run("run", "", 1.0)
        db = ledger._db
        ledger._db = _InterruptAfterCommit(db)
        with pytest.raises(KeyboardInterrupt):
            ledger.record_result("t1", "success", 1.0, job_key="j1")
        ledger._db = db
        assert list(ledger.results()) == ["t1"]
