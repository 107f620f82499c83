"""What a ledger keeps across sessions of the same run."""

from __future__ import annotations

from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger


def test_each_new_ledger_has_its_own_instance_kept_on_resume(tmp_path):
    with Ledger(tmp_path / "a.db") as first:
        a = first.init_run("waa-aml", "cfg", 1.0)
    with Ledger(tmp_path / "b.db") as other:
        b = other.init_run("waa-aml", "cfg", 1.0)
    with Ledger(tmp_path / "a.db") as resumed:
        again = resumed.init_run("waa-aml", "cfg", 2.0)
    assert len(a.instance) == 6 and a.instance != b.instance
    assert again.instance == a.instance and again.sessions == 2


def test_measured_node_seconds_add_up_over_sessions(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.init_run("r", "cfg", 1.0)
        ledger.record_node_seconds(1, 100.0)
        ledger.record_node_seconds(1, 120.0)  # a later measurement of the same session
        ledger.record_node_seconds(2, 30.5)
        assert ledger.node_seconds() == 150.5
        assert ledger.node_seconds(excluding_session=2) == 120.0
    with Ledger(tmp_path / "l.db") as reopened:
        assert reopened.node_seconds() == 150.5
