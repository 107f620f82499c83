"""``ansible-playbook site.yml -e tier=auto`` as a user runs it: the Azure ML layer prepared by
its own playbook, the evaluation over [aml, local]; from the middle of the run every Azure ML
container crashes (a workload fault through the emulator's admin API). The run finishes without
intervention, every task exactly once, the rest on the next tier; the report names the move;
no node is left running."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing

import pytest
from playbook_runner import Playground, _pointed_at

from localazure.testing import RunningEmulator

pytestmark = pytest.mark.integration

RUN_NAME = "waa-auto"
TASKS = 12


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    emulator = RunningEmulator(root / "localazure").start()
    try:
        with _pointed_at(emulator):
            yield Playground(emulator, root)
    finally:
        emulator.stop()


def results(ledger) -> int:
    try:
        with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_site_tier_auto_moves_to_the_next_tier_when_aml_fails_from_the_middle(playground):
    playground.reset()
    ledger = playground.runs_dir / RUN_NAME / "ledger.sqlite3"

    def inject():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and results(ledger) < TASKS // 3:
            time.sleep(0.2)
        playground.emulator.admin(
            "POST",
            "ml/faults",
            {"fault": "crash", "job": f"^{RUN_NAME}-", "after_s": 0.0, "times": 1000},
        )

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    run = playground.play(
        "-e",
        "tier=auto",
        "-e",
        json.dumps(
            {
                "eval_tiers": ["aml", "local"],
                "eval_max_tasks": TASKS,
                "eval_workers": 3,
                "eval_scale_down_wait": 30,
                "aml_cluster_idle_seconds": 2,
                "eval_startup_timeout": 20,
            }
        ),
        timeout=900,
    )
    injector.join(5)
    assert run.returncode == 0, run.tail()
    assert "tier aml is not usable" in run.output and "go to tier local" in run.output

    report = json.loads((playground.report_dir / f"{RUN_NAME}.json").read_text())
    evaluation = report["evaluation"]
    assert evaluation["status"] == "completed" and len(evaluation["tasks"]) == TASKS
    assert evaluation["duplicates_ignored"] == 0
    by_tier = evaluation["tasks_by_tier"]
    assert set(by_tier) == {"aml", "local"} and sum(by_tier.values()) == TASKS
    [move] = [m for m in report["tier"]["moves"] if m["event"] == "out"]
    assert (move["tier"], move["to"]) == ("aml", "local")
    assert evaluation["scale_to_zero"] == {
        "nodes_left": {"aml": 0, "local": 0},
        "ok": True,
        "waited_s": 30.0,
    }
    nodes = playground.emulator.admin("GET", "ml/nodes")["value"]
    assert nodes and all(node["released_at"] is not None for node in nodes)
