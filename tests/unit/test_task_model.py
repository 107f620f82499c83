from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from localazure.workload import task_model

WAA_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}-WOS$")


def test_synthetic_set_has_waa_shape_and_composition():
    data = json.loads(task_model.SYNTHETIC_TEST_ALL.read_text())
    assert isinstance(data, dict) and all(isinstance(v, list) for v in data.values())
    assert {d: len(ids) for d, ids in data.items()} == task_model.DOMAIN_COUNTS
    tasks = task_model.list_tasks()
    assert len(tasks) == 154
    assert all(WAA_ID.match(task_id) for _, task_id in tasks)
    assert len({task_id for _, task_id in tasks}) == 154
    assert tasks[0][0] == "chrome" and tasks[-1][0] == "windows_calc"  # file order


def test_frozen_file_matches_the_generator():
    assert task_model.load_test_all() == task_model.generate_synthetic_test_all()


def test_models_are_pure_functions_of_seed_and_task():
    domain, task_id = task_model.list_tasks()[5]
    assert task_model.modelled_minutes(domain, task_id, seed=0) == task_model.modelled_minutes(
        domain, task_id, seed=0
    )
    assert task_model.modelled_minutes(domain, task_id, seed=0) != task_model.modelled_minutes(
        domain, task_id, seed=1
    )
    assert task_model.modelled_duration_s(domain, task_id, time_scale=0.1) == pytest.approx(
        task_model.modelled_minutes(domain, task_id) * 0.1
    )


def test_durations_are_waa_like_heavier_for_office_and_code_with_a_long_tail():
    tasks = task_model.list_tasks()
    minutes = {t: task_model.modelled_minutes(d, t) for d, t in tasks}
    by_domain: dict[str, list[float]] = {}
    for domain, task_id in tasks:
        by_domain.setdefault(domain, []).append(minutes[task_id])
    mean = {d: sum(v) / len(v) for d, v in by_domain.items()}
    assert mean["libreoffice_calc"] > mean["notepad"] and mean["vs_code"] > mean["clock"]
    values = sorted(minutes.values())
    median = values[len(values) // 2]
    assert 5 <= median <= 10  # WAA tasks take ~3-15 minutes
    assert values[-1] > 3 * median  # stragglers
    assert all(task_model.MIN_MINUTES <= v <= task_model.MAX_MINUTES for v in values)


def test_success_rates_follow_the_domain_model():
    tasks = task_model.list_tasks()
    rate = sum(task_model.modelled_success(d, t) for d, t in tasks) / len(tasks)
    assert 0.15 < rate < 0.45
    assert Counter(task_model.modelled_success(d, t, seed=3) for d, t in tasks) != Counter(
        {True: 0}
    )


def test_task_durations_cover_every_task_at_the_given_scale():
    durations = task_model.task_durations(time_scale=0.01, seed=2)
    assert len(durations) == 154
    domain, task_id = task_model.list_tasks()[40]
    assert durations[task_id] == pytest.approx(
        task_model.modelled_minutes(domain, task_id, seed=2) * 0.01
    )
