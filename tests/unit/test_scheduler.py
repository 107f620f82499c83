from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.scheduler import (
    DynamicChunking,
    StaticSharding,
    contiguous_shards,
    make_scheduler,
)

TASKS = [f"t{i:02d}" for i in range(23)]


def drain(scheduler):
    chunks = []
    while True:
        chunk = scheduler.next_chunk()
        if not chunk:
            return chunks
        chunks.append(chunk)


def test_contiguous_shards_match_waa_split():
    shards = contiguous_shards(TASKS, 5)
    assert [len(s) for s in shards] == [5, 5, 5, 4, 4]
    assert [t for s in shards for t in s] == TASKS  # contiguous and in order
    assert contiguous_shards(["a", "b"], 4) == [["a"], ["b"]]


def test_static_hands_each_worker_one_chunk():
    scheduler = StaticSharding(TASKS, 4)
    chunks = drain(scheduler)
    assert len(chunks) == 4
    assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
    assert scheduler.remaining == 0


def test_static_requeued_tasks_come_back_first_as_one_chunk():
    scheduler = StaticSharding(TASKS, 4)
    first = scheduler.next_chunk()
    scheduler.requeue(first[2:])
    assert scheduler.next_chunk() == first[2:]
    assert scheduler.remaining == len(TASKS) - len(first)


def test_dynamic_chunks_shrink_guided_self_scheduling():
    scheduler = DynamicChunking(TASKS, workers=3, factor=2)
    sizes = [len(c) for c in drain(scheduler)]
    # ceil(23/6)=4, ceil(19/6)=4, ceil(15/6)=3, ceil(12/6)=2, ceil(10/6)=2, ceil(8/6)=2, then 1s
    assert sizes == [4, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1]
    assert sum(sizes) == len(TASKS)


def test_dynamic_respects_max_chunk_and_keeps_order():
    scheduler = DynamicChunking(TASKS, workers=1, factor=1, max_chunk=5)
    chunks = drain(scheduler)
    assert all(len(c) <= 5 for c in chunks)
    assert [t for c in chunks for t in c] == TASKS


def test_dynamic_requeue_goes_to_front_in_order():
    scheduler = DynamicChunking(TASKS, workers=2, factor=2)
    first = scheduler.next_chunk()
    scheduler.requeue(first)
    assert scheduler.next_chunk()[: len(first)] == first


def test_invalid_settings_and_strategy_names():
    with pytest.raises(ValueError):
        DynamicChunking(TASKS, workers=0)
    with pytest.raises(ValueError):
        DynamicChunking(TASKS, workers=1, min_chunk=3, max_chunk=2)
    with pytest.raises(ValueError, match="unknown scheduling strategy"):
        make_scheduler("random", TASKS, 2)
    assert isinstance(make_scheduler("static", TASKS, 2), StaticSharding)


def test_balanced_start_gives_each_worker_an_equal_share_of_the_long_tasks_first():
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.scheduler import (
        BalancedStart,
    )

    # Longest expected first: 3 long (6), 6 medium (2), 6 short (1); 36 in all.
    expected = {f"l{i}": 6.0 for i in range(3)}
    expected |= {f"m{i}": 2.0 for i in range(6)}
    expected |= {f"s{i}": 1.0 for i in range(6)}
    order = list(expected)
    scheduler = BalancedStart(order, expected, workers=3, head=0.75, factor=1.0)
    assert scheduler.remaining == 15
    chunks = drain(scheduler)
    head, tail = chunks[:3], chunks[3:]
    # Up to 27 of the 36 go out first (26: the next medium would pass 27), one job per worker,
    # each task to the job with the least expected work so far, the heaviest job first.
    assert [sum(expected[t] for t in c) for c in head] == [10.0, 8.0, 8.0]
    assert sorted(t for c in head for t in c) == sorted(order[:7])
    # Then the short rest in shrinking chunks.
    assert [len(c) for c in tail] == [3, 2, 1, 1, 1]
    assert sorted(t for c in chunks for t in c) == sorted(order)


def test_balanced_start_requeues_to_the_front_and_cuts_head_jobs_at_max_chunk():
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.scheduler import (
        BalancedStart,
    )

    expected = {f"t{i}": 1.0 for i in range(8)}
    scheduler = BalancedStart(list(expected), expected, workers=2, head=1.0, max_chunk=3)
    assert [len(c) for c in drain(scheduler)] == [3, 1, 3, 1]
    scheduler = BalancedStart(list(expected), expected, workers=2, head=0.5)
    first = scheduler.next_chunk()
    scheduler.requeue(first)
    assert scheduler.remaining == 8
    assert set(first) <= {t for c in drain(scheduler) for t in c}
    assert isinstance(make_scheduler("dynamic", TASKS, 2, expected={}, head=0.8), BalancedStart)
    assert isinstance(make_scheduler("dynamic", TASKS, 2), DynamicChunking)
