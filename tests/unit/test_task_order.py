from __future__ import annotations

from ansible_collections.openadapt.azure_eval.plugins.module_utils.task_order import longest_first

DOMAINS = {"n1": "notepad", "c1": "chrome", "v1": "vs_code", "x1": "unknown_app", "v2": "vs_code"}


def test_prior_puts_complex_domains_first_and_keeps_ties_in_order():
    assert longest_first(["n1", "c1", "v1", "x1", "v2"], DOMAINS) == ["v1", "v2", "c1", "x1", "n1"]


def test_measured_durations_override_the_prior():
    # notepad turned out slow in this run, vs_code fast
    observed = {"notepad": [50.0, 70.0], "vs_code": [5.0]}
    order = longest_first(["n1", "c1", "v1"], DOMAINS, observed)
    assert order[0] == "n1" and order[-1] == "v1"
