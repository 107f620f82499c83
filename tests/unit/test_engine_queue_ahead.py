"""Jobs queued ahead of the nodes, on a tier that queues them (as AML does), and the startup
check that tells a job waiting for a node of the run apart from a container that never started.

The scripted tier here has a fixed number of nodes: a job gets the first node to come free and
its worker's script starts then; until then the job is QUEUED. Fake clock, no processes.
"""

from __future__ import annotations

import threading
import time

from test_engine import IDS, Plan, ScriptedTier, make_engine, worker_plan

from ansible_collections.openadapt.azure_eval.plugins.module_utils.active_jobs import (
    ActiveJob,
    JobBook,
    health_failure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import STARTUP_TIMEOUT
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    JobState,
    JobStatus,
)

TASKS = [("chrome", f"c{i}") for i in range(6)] + [("vlc", f"v{i}") for i in range(6)]


class NodeQueueTier(ScriptedTier):
    """``nodes`` nodes; a job waits QUEUED for the first node to come free (in submission
    order), then runs its plan from that moment, as AML's queue does."""

    queues_jobs = True

    def __init__(self, clock, planner, nodes):
        super().__init__(clock, planner)
        self._free = [clock()] * nodes  # when each node is (or will be) free
        self._node_of = {}
        self._lock = threading.Lock()
        self.starts = {}
        self.most_active = 0

    def submit(self, job_key, task_ids):
        with self._lock:
            handle = super().submit(job_key, task_ids)
            self.jobs[handle]["t0"] = float("inf")
            self.jobs[handle]["submitted"] = self.clock()
            self.most_active = max(self.most_active, self._active())
            return handle

    def _advance(self):
        now = self.clock()
        for handle, job in self.jobs.items():
            if handle in self.starts or job["cancelled_at"] is not None:
                continue
            node = min(range(len(self._free)), key=self._free.__getitem__)
            if self._free[node] > now:
                return
            start = max(self._free[node], job["submitted"])
            end = job["plan"].end_at
            self._free[node] = start + end if end is not None else float("inf")
            job["t0"] = self.starts[handle] = start
            self._node_of[handle] = node

    def _active(self):
        now = self.clock()
        return sum(
            1
            for job in self.jobs.values()
            if job["cancelled_at"] is None
            and (job["plan"].end_at is None or job["t0"] + job["plan"].end_at > now)
        )

    def status(self, handle):
        self._advance()
        job = self.jobs[handle]
        if job["cancelled_at"] is None and self.clock() < job["t0"]:
            return JobStatus(JobState.QUEUED)
        return super().status(handle)

    def read_new_lines(self, handle):
        self._advance()
        if self.clock() < self.jobs[handle]["t0"]:
            return []
        return super().read_new_lines(handle)

    def cancel(self, handle):
        super().cancel(handle)
        node = self._node_of.get(handle)
        if node is not None:
            self._free[node] = min(self._free[node], self.clock())


def queue_engine(tmp_path, planner, nodes=2, tier_class=None, **config):
    engine, scripted, clock = make_engine(tmp_path, planner, tasks=TASKS, **config)
    tier = (tier_class or NodeQueueTier)(clock, planner, nodes)
    engine.tier = tier
    engine._book.tier = tier
    engine._slots = engine._workers * (1 + engine.config.queue_ahead)
    return engine, tier, clock


def test_one_job_queued_ahead_per_worker_and_none_judged_for_waiting(tmp_path):
    # Two-task jobs of 60 s tasks wait 120 s and more for a node: far past the startup limit.
    engine, tier, _ = queue_engine(
        tmp_path,
        lambda key, ids, n: worker_plan(key, ids, start=5.0),
        workers=2,
        startup_timeout=30,
        poll_interval=10,
        max_chunk=2,
    )
    result = engine.run()
    assert result.succeeded == len(TASKS) and result.retries == []
    assert tier.cancelled == []
    assert tier.most_active == 4  # two running, two queued ahead
    # The first job queued ahead started the moment the first node came free, not at a poll.
    first_end = min(tier.starts[h] + tier.jobs[h]["plan"].end_at for h in ("h-1", "h-2"))
    assert tier.starts["h-3"] == first_end


def test_no_queue_ahead_on_a_tier_that_starts_every_job_at_once(tmp_path):
    engine, tier, _ = make_engine(
        tmp_path, lambda key, ids, n: worker_plan(key, ids), workers=2, queue_ahead=1
    )
    engine.run()
    assert engine._slots == 2
    assert sorted(tier.tasks_submitted()) == sorted(IDS)


def test_queued_job_whose_container_never_starts_is_caught_after_its_node_frees(tmp_path):
    never = {}

    def plan(key, ids, n):
        if n == 3:  # the first job queued ahead: gets a node, prints nothing, never ends
            never["key"] = key
            return Plan(lines=[], running_at=0.0, end_at=None)
        return worker_plan(key, ids, start=5.0)

    engine, tier, clock = queue_engine(
        tmp_path, plan, workers=2, startup_timeout=30, poll_interval=10, max_chunk=2
    )
    result = engine.run()
    assert result.succeeded == len(TASKS)
    failures = [r for r in result.retries if r.code == STARTUP_TIMEOUT]
    assert [r.job_key for r in failures] == [never["key"]]
    assert "container probably never started" in failures[0].reason
    handle = next(h for h, job in tier.jobs.items() if job["plan"].lines == [])
    waited = tier.starts[handle] - tier.jobs[handle]["submitted"]
    assert waited > 30  # it waited longer than the limit for its node, and was not judged
    # Caught within the limit plus one poll (at the relaxed cadence) of getting its node.
    assert failures[0].at - tier.starts[handle] <= 30 + 4 * 10


def test_startup_messages_tell_waiting_for_a_node_from_never_started():
    class Nothing:
        pass

    book = JobBook(Nothing())
    running = ActiveJob("a", ["t1"], submitted_at=0.0, state=JobState.RUNNING)
    running.first_event_at = running.last_event_at = 1.0
    queued = ActiveJob("b", ["t2"], submitted_at=0.0, startup_from=0.0)
    book.add(running)
    book.add(queued)
    assert book.waiting_for_node(queued, nodes=1)
    assert not book.waiting_for_node(queued, nodes=2)  # a node is free: not ours to wait for
    assert not book.waiting_for_node(running, nodes=1)
    # The tier says the job waits for a node of ours that the book no longer counts (a
    # cancelled job's, not given back yet): waiting, whatever the book's count.
    book.note_status(queued, JobStatus(JobState.QUEUED, waits_for_own_node=True), 5.0)
    assert book.waiting_for_node(queued, nodes=2)
    book.note_status(queued, JobStatus(JobState.QUEUED), 6.0)
    assert not book.waiting_for_node(queued, nodes=2)

    late = health_failure(queued, 100.0, startup_timeout=50, stuck_after=600)
    assert late is not None and late.code == STARTUP_TIMEOUT
    assert "no node was given to it" in late.message and "of submission" in late.message

    queued.startup_from = 80.0  # it waited behind our busy node until 80
    assert health_failure(queued, 100.0, startup_timeout=50, stuck_after=600) is None
    queued.state = JobState.RUNNING
    queued.running_since = 90.0
    started = health_failure(queued, 150.0, startup_timeout=50, stuck_after=600)
    assert started is not None and "container probably never started" in started.message


def test_concurrent_submits_record_every_job_once(tmp_path):
    engine, tier, _ = queue_engine(
        tmp_path,
        lambda key, ids, n: worker_plan(key, ids, start=5.0),
        nodes=4,
        workers=4,
        submit_concurrency=4,
        max_chunk=1,
    )
    result = engine.run()
    assert result.succeeded == len(TASKS)
    assert sorted(tier.tasks_submitted()) == sorted(t for _, t in TASKS)
    assert len({key for key, _, _ in tier.submits}) == result.jobs_submitted == len(TASKS)


class SlowFirstSubmitTier(NodeQueueTier):
    """The earlier a job is handed out, the longer its submit takes: concurrent submits would
    reach the queue in reverse."""

    def submit(self, job_key, task_ids):
        time.sleep(0.03 * max(0, 9 - int(job_key.rsplit("-", 1)[1])))
        return super().submit(job_key, task_ids)


def test_jobs_queued_ahead_reach_the_queue_in_the_order_they_were_handed_out(tmp_path):
    engine, tier, _ = queue_engine(
        tmp_path,
        lambda key, ids, n: worker_plan(key, ids, start=5.0),
        nodes=4,
        tier_class=SlowFirstSubmitTier,
        workers=4,
        submit_concurrency=4,
        max_chunk=1,
    )
    result = engine.run()
    assert result.succeeded == len(TASKS)
    arrived = [int(key.rsplit("-", 1)[1]) for key, _, _ in tier.submits]
    # The four for the free nodes, in any order; then the four queued ahead, as handed out.
    assert sorted(arrived[:4]) == [1, 2, 3, 4]
    assert arrived[4:8] == [5, 6, 7, 8]
