from __future__ import annotations

import json

from ansible_collections.openadapt.azure_eval.plugins.module_utils.eval_inputs import check

NAMES = {"task_set": "eval_task_set", "workers": "eval_workers", "task_ids": "eval_task_ids"}
GOOD = dict(
    workers=2,
    max_attempts=3,
    startup_timeout=60.0,
    stuck_after=60.0,
    poll_interval=1.0,
    heartbeat_interval=2.0,
    job_timeout=3600,
)


def task_set(tmp_path, content):
    path = tmp_path / "test_all.json"
    path.write_text(content)
    return str(path)


def test_good_inputs_select_the_tasks(tmp_path):
    path = task_set(tmp_path, json.dumps({"chrome": ["a", "b"], "vlc": ["c"]}))
    tasks, errors = check({**GOOD, "task_set": path, "domains": ["chrome"]}, NAMES)
    assert errors == [] and tasks == [("chrome", "a"), ("chrome", "b")]


def test_every_bad_input_is_named_as_the_user_set_it(tmp_path):
    path = task_set(tmp_path, json.dumps({"chrome": ["a"]}))
    _, errors = check(
        {
            **GOOD,
            "task_set": path,
            "task_ids": ["zzz"],
            "workers": 0,
            "startup_timeout": 0,
            "heartbeat_interval": 90,
        },
        NAMES,
    )
    assert any(e.startswith("eval_workers is 0") for e in errors)
    assert any(e.startswith("startup_timeout is 0") for e in errors)  # unnamed: option's name
    assert any(e.startswith("eval_task_ids: not in") and "zzz" in e for e in errors)
    assert any("heartbeat_interval (90s) must be shorter than stuck_after" in e for e in errors)


def test_a_missing_or_malformed_task_set(tmp_path):
    _, errors = check({**GOOD, "task_set": str(tmp_path / "nope.json")}, NAMES)
    assert errors == [f"eval_task_set: {tmp_path / 'nope.json'} does not exist (or is not a file)"]
    path = task_set(tmp_path, '{"chrome": [')
    _, errors = check({**GOOD, "task_set": path}, NAMES)
    assert len(errors) == 1 and "is not valid JSON" in errors[0]
    path = task_set(tmp_path, '["a", "b"]')
    _, errors = check({**GOOD, "task_set": path}, NAMES)
    assert "test_all.json shape" in errors[0]
