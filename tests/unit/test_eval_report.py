"""The eval_report callback: one report and one summary per run, whatever Ansible calls."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.openadapt.azure_eval.plugins.callback import eval_report

EVALUATION = {
    "run_id": "waa-unit",
    "status": "completed",
    "total_tasks": 3,
    "tasks": {
        "a": {"status": "success", "score": 1.0},
        "b": {"status": "fail", "score": 0.0},
        "c": {"status": "error", "score": 0.0},
    },
    "succeeded": 1,
    "failed": 1,
    "errored": 1,
    "success_rate": 1 / 3,
    "domains": {"chrome": {"total": 3, "succeeded": 1, "success_rate": 1 / 3}},
    "retries": [{"code": "Throttled"}, {"code": "Throttled"}],
    "makespan_s": 12.0,
    "jobs_submitted": 2,
}


class Display:
    def __init__(self):
        self.lines = []

    def display(self, line, **kwargs):
        self.lines.append(line)


def result(action="openadapt.azure_eval.eval_run", evaluation=EVALUATION, msg=None):
    return SimpleNamespace(
        _task=SimpleNamespace(action=action),
        _result={
            "evaluation": evaluation,
            "msg": msg,
            "tier_details": {"tier": "aml"},
            "ledger": "/tmp/ledger.sqlite3",
        },
    )


@pytest.fixture
def callback(tmp_path, monkeypatch):
    plugin = eval_report.CallbackModule()
    plugin._display = Display()
    monkeypatch.setattr(plugin, "get_option", lambda name: str(tmp_path / "reports"))
    writes = []
    original = Path.write_text

    def counting_write_text(self, *args, **kwargs):
        writes.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", counting_write_text)
    plugin.writes = writes
    return plugin


def test_one_run_gives_one_report_and_one_summary(callback, tmp_path):
    callback.v2_runner_on_ok(result())
    callback.v2_runner_on_ok(result(action="ansible.builtin.debug"))
    callback.v2_playbook_on_stats(None)

    report_path = tmp_path / "reports" / "waa-unit.json"
    assert callback.writes == [report_path]
    report = json.loads(report_path.read_text())
    assert report["evaluation"] == EVALUATION
    assert (report["run_id"], report["failed"], report["tier"]) == (
        "waa-unit",
        False,
        {"tier": "aml"},
    )
    text = "\n".join(callback._display.lines)
    assert text.count("WAA evaluation waa-unit on aml: completed") == 1
    assert text.count("tasks 3: 1 succeeded, 1 failed, 1 errors, 0 without a result") == 1
    assert "success rate 33.3%" in text
    assert "retries 2: Throttled x2" in text
    assert text.count(f"report: {report_path}") == 1


def test_a_failed_run_is_reported_with_its_message(callback, tmp_path):
    partial = {"run_id": "waa-unit", "status": "failed", "tasks": {}, "total_tasks": 3}
    callback.v2_runner_on_failed(result(evaluation=partial, msg="tier unhealthy"))
    callback.v2_playbook_on_stats(None)

    report = json.loads((tmp_path / "reports" / "waa-unit.json").read_text())
    assert report["failed"] is True and report["message"] == "tier unhealthy"
    text = "\n".join(callback._display.lines)
    assert text.count("FAILED: tier unhealthy") == 1
    assert "3 without a result" in text


def test_no_evaluation_no_report(callback, tmp_path):
    callback.v2_runner_on_ok(result(action="ansible.builtin.command"))
    callback.v2_playbook_on_stats(None)
    assert callback.writes == [] and callback._display.lines == []
