"""The task feed's tail and end: who gets the last tasks, and when, on a fake clock.

The tier here simulates workers that follow their job's feed the way worker/waa_worker.py
does: the tasks they were started with, then entry 1, 2, ... of the feed, each looked for
every ``look_every`` seconds once the tasks before it are done (``awaiting`` said once when it
is not there yet), until an empty entry.
"""

from __future__ import annotations

from collections import deque

from test_engine import Clock, ledger_rows

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    BaseTier,
    JobState,
    JobStatus,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    format_event,
)

BOOT_S = 5.0


class FeedWorkerTier(BaseTier):
    name = "feed"
    feeds_tasks = True

    def __init__(self, clock, durations, look_every=0.25):
        self.clock = clock
        self.durations = durations
        self.look_every = look_every
        self.jobs = {}
        self.entries = {}  # handle -> {seq: (written at, task ids)}
        self.awaited = []  # (handle, seq) of every entry a worker had to wait for
        self.ran_on = {}  # task id -> the handle of the job that ran it

    def submit(self, job_key, task_ids):
        handle = f"h-{len(self.jobs) + 1}"
        t = self.clock() + BOOT_S
        self.jobs[handle] = {
            "key": job_key,
            "t0": self.clock(),
            "t": t,  # when the worker does its next step
            "todo": deque(task_ids),
            "begun": False,
            "seq": 1,
            "awaiting": False,
            "ended_at": None,
            "lines": [],
            "read": 0,
        }
        self.entries[handle] = {}
        self._emit(handle, "started", t, task_ids=list(task_ids))
        return handle

    def offer(self, handle, seq, task_ids):
        self.entries[handle].setdefault(seq, (self.clock(), list(task_ids)))

    def _emit(self, handle, event, ts, **fields):
        self.jobs[handle]["lines"].append(
            format_event(event, self.jobs[handle]["key"], ts=ts, **fields)
        )

    def _advance(self, handle):
        job, now = self.jobs[handle], self.clock()
        while job["ended_at"] is None and job["t"] <= now:
            if job["todo"]:
                task = job["todo"][0]
                if not job["begun"]:
                    self._emit(handle, "task_started", job["t"], task_id=task)
                    job["begun"] = True
                end = job["t"] + self.durations[task]
                if end > now:
                    return
                self._emit(
                    handle,
                    "task_result",
                    end,
                    task_id=task,
                    status="success",
                    score=1.0,
                    duration_s=self.durations[task],
                )
                self.ran_on[job["todo"].popleft()] = handle
                job["t"], job["begun"] = end, False
                continue
            written = self.entries[handle].get(job["seq"])
            if written is None or written[0] > job["t"]:
                if not job["awaiting"]:
                    self._emit(handle, "awaiting", job["t"], seq=job["seq"])
                    self.awaited.append((handle, job["seq"]))
                    job["awaiting"] = True
                if written is None:
                    return
                job["t"] += self.look_every
                continue
            _at, task_ids = written
            job["awaiting"] = False
            if not task_ids:
                self._emit(handle, "finished", job["t"], completed=0)
                job["ended_at"] = job["t"]
                return
            self._emit(handle, "tasks_added", job["t"], seq=job["seq"], task_ids=task_ids)
            job["todo"].extend(task_ids)
            job["seq"] += 1

    def status(self, handle):
        self._advance(handle)
        job = self.jobs[handle]
        if job["ended_at"] is not None and self.clock() >= job["ended_at"] + 1:
            return JobStatus(
                JobState.COMPLETED, node_started_at=job["t0"], node_released_at=job["ended_at"] + 1
            )
        return JobStatus(JobState.RUNNING, node_started_at=job["t0"])

    def read_new_lines(self, handle):
        self._advance(handle)
        job = self.jobs[handle]
        new = job["lines"][job["read"] :]
        job["read"] = len(job["lines"])
        return new

    def cancel(self, handle):
        raise AssertionError(f"{handle} was cancelled")


def run_feed(tmp_path, tasks, durations, workers, **config):
    clock = Clock()
    tier = FeedWorkerTier(clock, durations)
    engine = EvaluationEngine(
        tier,
        tasks,
        tmp_path / "ledger.db",
        EngineConfig(
            workers=workers,
            poll_interval=1.0,
            startup_timeout=300,
            stuck_after=600,
            run_id="run",
            submit_concurrency=1,
            **config,
        ),
        clock=clock,
        sleep=clock.sleep,
        handle_signals=False,
    )
    started = clock()
    result = engine.run()
    return tier, result, clock() - started


def test_with_right_estimates_no_worker_ever_waits_for_an_entry(tmp_path):
    # Three domains of one duration each: what the engine learns from the first results is
    # exact, so it can tell who frees first all through the tail and the end.
    lengths = {"vs_code": 40.0, "chrome": 20.0, "notepad": 7.0}
    tasks = [
        (d, f"{d}-{i}")
        for d, n in (("vs_code", 6), ("chrome", 12), ("notepad", 14))
        for i in range(n)
    ]
    durations = {t: lengths[d] for d, t in tasks}
    tier, result, _ = run_feed(tmp_path, tasks, durations, workers=4)
    rows, jobs, _attempts, _meta = ledger_rows(tmp_path)
    assert sorted(rows) == sorted(durations) and result.retries == []
    assert len(jobs) == 4  # one job per worker, all run long
    # Every entry was there when its worker looked, the last (empty) ones too.
    assert tier.awaited == []


def test_the_tail_goes_by_asking_until_there_are_results_then_to_who_frees_first(tmp_path):
    # Three workers, one chrome task (18 s) and five notepad ones (10 s), one task a chunk: the
    # tail starts with the first tasks, before any result. The notepad jobs end first and ask;
    # then, with durations learnt, the last task is written ahead for the chrome job, which
    # frees (at 23 s) before the two that have just taken their second task.
    tasks = [("chrome", "c1")] + [("notepad", f"n{i}") for i in range(1, 6)]
    durations = {"c1": 18.0, **{f"n{i}": 10.0 for i in range(1, 6)}}
    tier, result, elapsed = run_feed(
        tmp_path, tasks, durations, workers=3, balanced_head=0.0, max_chunk=1
    )
    assert sorted(tier.ran_on) == sorted(durations) and result.retries == []
    assert sorted(tier.awaited) == [("h-2", 1), ("h-3", 1)]
    assert [t for t, handle in tier.ran_on.items() if handle == "h-1"] == ["c1", "n5"]
    assert elapsed < BOOT_S + 18.0 + 10.0 + 3.0  # a poll or two after the last result


def test_with_a_feed_the_jobs_start_with_shrinking_chunks_not_a_head_balanced_on_estimates(
    tmp_path,
):
    # The domains' estimates cannot tell two vs_code tasks from the others, and those two are
    # long. The balanced head (vs_code first, dealt round the jobs by the estimates) puts both
    # in one job, which no later chunk can even out; shrinking chunks handed out as workers
    # free do. (A tier without a feed keeps the head: there it spares job restarts.)
    slow = {"v0", "v3"}
    tasks = [("vs_code", f"v{i}") for i in range(6)] + [("notepad", f"n{i}") for i in range(6)]
    durations = {
        **{f"v{i}": 15.0 if f"v{i}" in slow else 1.0 for i in range(6)},
        **{f"n{i}": 3.0 for i in range(6)},
    }
    tier, result, by_default = run_feed(tmp_path / "default", tasks, durations, workers=3)
    assert sorted(tier.ran_on) == sorted(durations) and result.retries == []
    assert len({tier.ran_on[t] for t in slow}) == 2  # the two long tasks on two nodes
    _tier, _result, with_head = run_feed(
        tmp_path / "head", tasks, durations, workers=3, balanced_head=0.8
    )
    assert with_head >= BOOT_S + 30.0  # both long tasks in one job
    work = sum(durations.values()) / 3
    assert by_default <= BOOT_S + work + 6.0  # the last chunk's task and a few polls
    assert EngineConfig().head_for(feeds=False) == 0.8
