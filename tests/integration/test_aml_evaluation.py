"""The evaluation engine on the Azure ML tier against the emulator, in the failure scenarios of
the issue: each test drives ``EvaluationEngine`` + ``AmlTier`` (or the product's
``aml_compute`` module, or a controller process of its own) and asserts the final ledger and the
emulator's state (jobs, their std_logs, nodes, the request log).

Fast settings throughout: the emulator's ML time scale 0.05 (node provisioning, image pulls),
the WAA stand-in at 0.02 s per simulated minute, heartbeats every 0.25 s, polls every 0.2 s and
startup/stuck limits of a few seconds."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from aml_setup import FAST_JOB_ENV, GOLDEN_IMAGE_URI, RG, TERMINAL, WORKSPACE, build

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml
from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    PermanentFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.retries import RetryPolicy
from localazure.workload.task_model import list_tasks, modelled_minutes, modelled_success

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_ENGINE = Path(__file__).resolve().parent / "run_engine.py"
EVENT_PREFIX = "WAA_EVENT "
# Tasks of 5 to 12 simulated minutes (from several domains), so that durations are alike.
TASKS = [
    (domain, task_id)
    for domain, task_id in list_tasks()
    if 5.0 <= modelled_minutes(domain, task_id) <= 12.0
][::3]


def engine_config(run_id: str, price: float, **overrides) -> EngineConfig:
    settings = dict(
        workers=3,
        poll_interval=0.2,
        startup_timeout=5.0,
        stuck_after=2.0,
        max_attempts=3,
        requeue_backoff_initial=0.2,
        requeue_backoff_max=1.0,
        requeue_backoff_jitter=0.0,
        breaker_cooldown=1.0,
        breaker_give_up_after=30.0,
        submit_retry=RetryPolicy(
            max_attempts=4, initial_delay=0.2, max_delay=2.0, max_total_delay=10.0, jitter=0.0
        ),
        price_per_node_hour=price,
        run_id=run_id,
    )
    settings.update(overrides)
    return EngineConfig(**settings)


# These tests time faults and limits from the container's start: the worker skips WAA's VM boot
# (its phases and failures are tested in test_waa_boot.py).
NO_BOOT = {"WAA_VM_BOOT": "0"}


def run_engine(
    world, run_id, tasks, ledger_path, *, job_environment=None, task_feed="", **overrides
):
    tier = world.tier(
        run_id, job_environment={**NO_BOOT, **(job_environment or {})}, task_feed=task_feed
    )
    engine = EvaluationEngine(
        tier,
        tasks,
        ledger_path,
        engine_config(run_id, tier.price_per_node_hour, **overrides),
        handle_signals=False,
    )
    return engine.run()


def events(log: str) -> list[dict]:
    return [
        json.loads(line[len(EVENT_PREFIX) :])
        for line in log.splitlines()
        if line.startswith(EVENT_PREFIX)
    ]


def finished_in_log(log: str) -> list[str]:
    return [e["task_id"] for e in events(log) if e["event"] == "task_result"]


def assert_every_task_once(ledger_path: Path, tasks) -> dict:
    """Every task has exactly one final result and no later result was offered for any."""
    with Ledger(ledger_path) as ledger:
        rows = ledger.results()
        assert ledger.duplicates_ignored == 0
    assert sorted(rows) == sorted(task_id for _, task_id in tasks)
    for domain, task_id in tasks:
        row = rows[task_id]
        assert row.domain == domain
        expected = "success" if modelled_success(domain, task_id) else "fail"
        assert (row.status, row.score) == (expected, 1.0 if expected == "success" else 0.0)
    return rows


def nth_job(ledger_path: Path, seq: int) -> str:
    """The key (and Azure ML name) of the run's ``seq``-th job: ``<run>-<instance>-<seq>``."""
    [key] = [key for key in ledger_jobs(ledger_path) if key.endswith(f"-{seq:04d}")]
    return key


def ledger_jobs(ledger_path: Path) -> dict:
    with Ledger(ledger_path) as ledger:
        return {job.job_key: job for job in ledger.jobs()}


def assert_stopped_at_the_first_failure(ledger_path: Path) -> None:
    """No result, nothing retried, no task tried twice, no job submitted after the first failure.

    A condition on what the engine did rather than a wall-clock bound, which a loaded machine
    breaks: a run that retried a permanent failure would show retries and later submissions.
    """
    with Ledger(ledger_path) as ledger:
        assert ledger.results() == {}
        assert ledger.retries() == []
        assert all(ledger.attempt_count(task_id) <= 1 for _, task_id in TASKS)
        jobs = ledger.jobs()
    first_failure = min(job.ended_at for job in jobs if job.state == "FAILED")
    assert all(job.submitted_at <= first_failure for job in jobs)


def run_status(ledger_path: Path) -> str:
    with Ledger(ledger_path) as ledger:
        meta = ledger.run_meta()
    assert meta is not None
    return meta.status


def results_so_far(ledger_path: Path) -> dict[str, str]:
    """task_id -> job_key, read-only, while another process writes the ledger."""
    if not ledger_path.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=5)) as db:
            return dict(db.execute("SELECT task_id, job_key FROM results"))
    except sqlite3.OperationalError:
        return {}


def jobs_so_far(ledger_path: Path) -> dict[str, tuple[str | None, list[str]]]:
    """job_key -> (handle, task ids), read-only, while another process writes the ledger."""
    if not ledger_path.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute("SELECT job_key, handle, task_ids FROM jobs").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {key: (handle, json.loads(task_ids)) for key, handle, task_ids in rows}


def assert_nothing_left_running(world, timeout: float = 20.0) -> dict[str, str]:
    statuses = world.wait_terminal(timeout=timeout)
    assert all(status in TERMINAL for status in statuses.values()), statuses
    return statuses


# -- the happy path -------------------------------------------------------------------------------


def test_twelve_tasks_on_three_workers_each_once_with_node_seconds_as_the_emulator(azure, tmp_path):
    # Nodes idle for 3 s before they scale down: a loaded controller's gap between a job's end
    # and the next job's start does not cost a node (at most three nodes over the run).
    world = build(azure, cluster=dict(max_nodes=3, idle_s=3))
    tasks = TASKS[:12]
    ledger_path = tmp_path / "ledger.db"

    # Tasks of 0.3 to 0.7 s: node time well above the idle tail the report has to estimate.
    result = run_engine(
        world, "happy", tasks, ledger_path, job_environment={"WAA_STANDIN_TIME_SCALE": "0.06"}
    )

    rows = assert_every_task_once(ledger_path, tasks)
    assert result.status == "completed" and len(result.tasks) == 12
    assert result.retries == [] and result.duplicates_ignored == 0
    assert run_status(ledger_path) == "completed"
    jobs = ledger_jobs(ledger_path)
    assert {job.state for job in jobs.values()} == {"COMPLETED"}
    statuses = world.jobs()
    assert statuses == {key: "Completed" for key in jobs}
    # Each task was handed to exactly one job and finished there, where the ledger says.
    handed = [t for key in jobs for t in world.job_tasks(key)]
    assert sorted(handed) == sorted(rows)
    for key in jobs:
        assert sorted(finished_in_log(world.std_log(key))) == sorted(world.job_tasks(key))
        assert all(rows[t].job_key == key for t in world.job_tasks(key))

    report = world.wait_scaled_down()
    [cluster] = report["computes"]
    assert 1 <= cluster["nodes"] <= 3
    measured = result.cost.node_hours * 3600
    assert measured == pytest.approx(cluster["node_seconds"], rel=0.10)


def test_task_feed_hands_running_jobs_their_next_tasks_one_job_per_worker(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3, idle_s=3))
    tasks = TASKS[:15]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(
        world,
        "feed",
        tasks,
        ledger_path,
        task_feed=world.task_feed(),
        job_environment={"WAA_CLIENT_BATCH": "1"},
    )

    rows = assert_every_task_once(ledger_path, tasks)
    assert result.retries == [] and result.jobs_submitted == 3
    jobs = ledger_jobs(ledger_path)
    assert world.jobs() == {key: "Completed" for key in jobs}
    for key, job in jobs.items():
        log_events = events(world.std_log(key))
        # The job definition names the first tasks only; the rest came through the feed (read
        # with the compute's identity), and the job ran all of them, where the ledger says.
        first = world.job_tasks(key)
        added = [t for e in log_events if e["event"] == "tasks_added" for t in e["task_ids"]]
        assert first + added == job.task_ids
        assert sorted(finished_in_log(world.std_log(key))) == sorted(job.task_ids)
        assert all(rows[t].job_key == key for t in job.task_ids)
        assert not [e for e in log_events if e["event"] == "feed_error"]
    assert sum(len(world.job_tasks(key)) for key in jobs) < len(tasks)


def test_task_feed_the_compute_may_not_read_ends_each_job_and_loses_nothing(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3, idle_s=3))
    tasks = TASKS[:9]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(
        world,
        "feed-denied",
        tasks,
        ledger_path,
        task_feed=world.task_feed("waa-feed-unreadable", readable=False),
    )

    assert_every_task_once(ledger_path, tasks)
    # Every worker said why it stopped (the grant it lacks); the tasks written for it went to
    # new jobs, charged nothing.
    assert result.retries == []
    jobs = ledger_jobs(ledger_path)
    errors = [
        e["message"]
        for key in jobs
        for e in events(world.std_log(key))
        if e["event"] == "feed_error"
    ]
    assert errors and all("Storage Blob Data Reader" in message for message in errors)
    with Ledger(ledger_path) as ledger:
        assert all(ledger.attempt_count(task_id) == 1 for _, task_id in tasks)


# -- workers that do not work ---------------------------------------------------------------------


def test_container_that_never_starts_is_cancelled_within_the_startup_timeout_and_rerun(
    azure, tmp_path
):
    world = build(azure, cluster=dict(max_nodes=3))
    azure.admin("POST", "ml/faults", {"fault": "never_starts", "job": "^never-.*-0001$"})
    tasks = TASKS[:6]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(world, "never", tasks, ledger_path, startup_timeout=3.0)

    rows = assert_every_task_once(ledger_path, tasks)
    never = nth_job(ledger_path, 1)
    first = ledger_jobs(ledger_path)[never]
    [retry] = result.retries
    assert (retry.job_key, retry.code) == (never, "StartupTimeout")
    assert sorted(retry.requeued_task_ids) == sorted(first.task_ids)
    # Detected once the job had been RUNNING for the startup timeout, not later. (Timed from
    # when it started running in Azure ML, the node's start: a round's jobs are submitted
    # concurrently, so on a loaded machine the submission itself can take seconds.)
    assert first.node_started_at is not None
    assert 3.0 <= retry.at - first.node_started_at <= 3.0 + 2.0
    assert (first.state, first.failure_code) == ("CANCELED", "StartupTimeout")
    # Its tasks were completed by other jobs.
    assert all(rows[t].job_key != never for t in first.task_ids)
    statuses = assert_nothing_left_running(world)
    assert statuses.pop(never) == "Canceled"
    assert set(statuses.values()) == {"Completed"}
    assert world.std_log(never) == ""  # the container never printed anything
    [fault] = azure.admin("GET", "ml/faults")["value"]
    assert fault["hits"] == 1


def test_worker_stuck_mid_run_is_cancelled_and_its_task_rerun(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    # The WAA client of the second job hangs on that job's first task.
    azure.admin("POST", "ml/faults", {"fault": "stuck", "job": "^stuck-.*-0002$"})
    tasks = TASKS[:6]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(world, "stuck", tasks, ledger_path, stuck_after=1.5)

    rows = assert_every_task_once(ledger_path, tasks)
    stuck = nth_job(ledger_path, 2)
    stuck_task = world.job_tasks(stuck)[0]
    [retry] = result.retries
    assert (retry.job_key, retry.code) == (stuck, "Stuck")
    assert "WAA client silent" in retry.reason and stuck_task in retry.requeued_task_ids
    with Ledger(ledger_path) as ledger:
        attempts = ledger.attempts(stuck_task)
    assert [(a.job_key, a.outcome, a.failure_code) for a in attempts] == [
        (stuck, "error", "Stuck"),
        (rows[stuck_task].job_key, rows[stuck_task].status, None),
    ]
    assert rows[stuck_task].job_key != stuck
    assert result.tasks[stuck_task].attempts == 2
    job = ledger_jobs(ledger_path)[stuck]
    assert (job.state, job.failure_code) == ("CANCELED", "Stuck")
    statuses = assert_nothing_left_running(world)
    assert statuses.pop(stuck) == "Canceled"
    assert set(statuses.values()) == {"Completed"}
    log = events(world.std_log(stuck))
    assert {"event": "task_started", "task_id": stuck_task}.items() <= log[1].items()
    assert stuck_task not in finished_in_log(world.std_log(stuck))


# -- configuration the run cannot fix -------------------------------------------------------------


def test_pull_denied_without_acr_pull_fails_fast_naming_the_grant(azure, tmp_path):
    world = build(azure, acr_pull=False, cluster=dict(max_nodes=3))
    ledger_path = tmp_path / "ledger.db"

    with pytest.raises(PermanentFailure) as raised:
        run_engine(world, "denied", TASKS[:6], ledger_path)

    failure = raised.value.failure
    assert failure.code == "ImagePullDenied"
    assert "AcrPull" in str(raised.value)
    assert run_status(ledger_path) == "failed"
    assert_stopped_at_the_first_failure(ledger_path)
    jobs = ledger_jobs(ledger_path)
    assert jobs and {job.state for job in jobs.values()} <= {"FAILED", "CANCELED"}
    statuses = assert_nothing_left_running(world)
    assert set(statuses) == set(jobs)
    assert "Completed" not in statuses.values()
    failed = [name for name, status in statuses.items() if status == "Failed"]
    assert failed and all(
        world.run_error(name) == ("UserError", "ImagePullUnauthorized") for name in failed
    )


def test_trusted_launch_cluster_made_outside_the_playbook_stops_the_run(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3, security_type="TrustedLaunch"))
    ledger_path = tmp_path / "ledger.db"

    with pytest.raises(PermanentFailure) as raised:
        run_engine(world, "tl", TASKS[:6], ledger_path)

    assert raised.value.failure.code == "NestedVirtualizationUnavailable"
    message = str(raised.value)
    assert "nested virtualization" in message and "TrustedLaunch" in message
    assert run_status(ledger_path) == "failed"
    assert_stopped_at_the_first_failure(ledger_path)
    jobs = ledger_jobs(ledger_path)
    statuses = assert_nothing_left_running(world)
    assert set(statuses) == set(jobs) and "Completed" not in statuses.values()
    failed = [name for name, status in statuses.items() if status == "Failed"]
    assert failed and all(
        world.run_error(name)[1] == "NestedVirtualizationUnavailable" for name in failed
    )
    assert "/dev/kvm not found" in world.std_log(failed[0])


def ansible_module(emulator, module: str, args: str) -> subprocess.Popen:
    """``ansible localhost -m openadapt.azure_eval.<module> -a <args>`` as a user runs it."""
    env = {
        **os.environ,
        **emulator.env,
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        # inventories/local is YAML; not loading the azure_rm inventory plugin (which imports
        # the Azure SDKs) saves seconds per call and changes nothing for the module.
        "ANSIBLE_INVENTORY_ENABLED": "ansible.builtin.yaml",
    }
    return subprocess.Popen(
        ["ansible", "localhost", "-m", f"openadapt.azure_eval.{module}", "-a", args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_aml_compute_refuses_trusted_launch_and_quota_overrun_before_creating_anything(azure):
    world = build(azure)
    azure.admin("PUT", "ml/quota", {"families": {"standardDSv5Family": 8}})
    since = azure.requests()[-1]["seq"]
    base = f"resource_group={RG} workspace={WORKSPACE} size=Standard_D4s_v5"
    # Both at once: each ad-hoc ansible call takes many seconds to start.
    trusted = ansible_module(
        azure, "aml_compute", f"{base} name=waa-tl security_type=TrustedLaunch max_instances=2"
    )
    over_quota = ansible_module(azure, "aml_compute", f"{base} name=waa-big max_instances=3")
    trusted_out, _ = trusted.communicate(timeout=120)
    quota_out, _ = over_quota.communicate(timeout=120)

    assert trusted.returncode != 0 and "FAILED" in trusted_out, trusted_out
    assert "TrustedLaunch" in trusted_out and "nested virtualization" in trusted_out
    assert "Use security_type: Standard" in trusted_out
    assert over_quota.returncode != 0 and "FAILED" in quota_out, quota_out
    assert "needs 12 vCPUs of the quota 'standardDSv5Family', which is 8" in quota_out
    assert "Lower max_instances to 2" in quota_out
    assert not world.compute_exists("waa-tl") and not world.compute_exists("waa-big")
    writes = [
        r for r in azure.requests(since) if r["method"] == "PUT" and "/computes/" in r["path"]
    ]
    assert writes == []
    assert world.nodes("waa-big")["value"] == [] and world.nodes("waa-tl")["value"] == []


# -- a throttling or failing control plane --------------------------------------------------------


def retried_after(azure, since: int, fault_ids: set[str]) -> list[tuple[dict, float]]:
    """Each injected error with the delay before the client sent the same request again."""
    log = azure.requests(since)
    pairs = []
    for index, entry in enumerate(log):
        if entry["fault"] not in fault_ids:
            continue
        again = next(
            r
            for r in log[index + 1 :]
            if (r["method"], r["path"]) == (entry["method"], entry["path"])
        )
        pairs.append((entry, again["ts"] - again["duration_ms"] / 1000 - entry["ts"]))
    return pairs


@pytest.mark.parametrize("status", [429, 503])
def test_throttled_or_failing_control_plane_is_retried_after_retry_after(azure, tmp_path, status):
    world = build(azure, cluster=dict(max_nodes=3))
    since = azure.requests()[-1]["seq"]
    # Five refusals of the first job's PUT outlast azure-ai-ml's own retries (four attempts), so
    # the engine's submit retry takes over; two of the first status read stay within them.
    storm = [
        azure.add_fault(
            method="PUT",
            # The first job's: a round's submits run concurrently.
            path=r"/workspaces/waa-ws/jobs/[^/]+-0001$",
            status=status,
            retry_after=1,
            times=5,
        ),
        azure.add_fault(
            method="GET", path=r"/runs/[^/]+/details$", status=status, retry_after=1, times=2
        ),
    ]
    tasks = TASKS[:6]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(world, f"storm{status}", tasks, ledger_path)

    assert_every_task_once(ledger_path, tasks)
    assert result.duplicates_ignored == 0 and len(result.tasks) == 6
    statuses = assert_nothing_left_running(world)
    assert set(statuses.values()) == {"Completed"}
    # Each job was created once: the retried PUTs did not make a second job.
    assert len(statuses) == result.jobs_submitted == len(ledger_jobs(ledger_path))
    faulted = retried_after(azure, since, {fault["id"] for fault in storm})
    assert len(faulted) == 5 + 2
    # The engine saw the submit fail (after the SDK's retries) and retried it itself.
    submit_retries = [r for r in result.retries if r.reason.startswith("submit attempt")]
    assert submit_retries and {r.job_key for r in submit_retries} == {nth_job(ledger_path, 1)}
    assert all(entry["status"] == status for entry, _ in faulted)
    for entry, delay in faulted:
        assert delay >= 1.0 - 0.05, (entry["method"], entry["path"], delay)


def test_throttling_storm_longer_than_the_sdk_retries_is_waited_out(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    since = azure.requests()[-1]["seq"]
    storm = azure.add_fault(
        method="GET",
        path=r"/runs/longstorm-[0-9a-f]+-0001/details$",
        status=429,
        retry_after=1,
        times=6,
    )
    tasks = TASKS[:3]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(world, "longstorm", tasks, ledger_path)

    assert_every_task_once(ledger_path, tasks)
    assert result.retries == []  # no job was given up on because of the throttling
    faulted = retried_after(azure, since, {storm["id"]})
    assert len(faulted) == 6
    for entry, delay in faulted:
        assert delay >= 1.0 - 0.05, (entry["path"], delay)


def test_a_storm_on_one_jobs_reads_stalls_no_other_job_and_judges_none_stuck(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    since = azure.requests()[-1]["seq"]
    # Longer than stuck_after (2 s) many times over: the job could not be looked at, which says
    # nothing about its worker.
    storm = azure.add_fault(
        method="GET",
        path=r"/runs/calm-[0-9a-f]+-0001/details$",
        status=429,
        retry_after=1,
        times=10,
    )
    tasks = TASKS[:12]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(world, "calm", tasks, ledger_path, job_environment=KILLED_JOB_ENV)

    assert_every_task_once(ledger_path, tasks)
    assert result.retries == []  # nothing given up on, nothing charged
    assert set(assert_nothing_left_running(world).values()) == {"Completed"}
    log = azure.requests(since)
    faulted = [r["ts"] for r in log if r["fault"] == storm["id"]]
    assert len(faulted) == 10
    # While the storm lasted, the other jobs were read as usual (their run history or their
    # log, every poll interval, 0.2 s; at least once a second here), not only between the
    # throttled calls.
    others = [
        r["ts"]
        for r in log
        if re.search(
            r"(/runs/|/dcid\.)calm-[0-9a-f]+-(?!0001)\d{4}(/details|/user_logs/std_log\.txt)$",
            r["path"],
        )
        and faulted[0] < r["ts"] < faulted[-1]
    ]
    jobs = ledger_jobs(ledger_path)
    active = [
        (job.submitted_at, job.ended_at) for key, job in jobs.items() if not key.endswith("0001")
    ]
    reads = [faulted[0], *others, faulted[-1]]
    gaps = [
        b - a
        for a, b in zip(reads, reads[1:], strict=False)
        if any(start <= a and b <= end for start, end in active)
    ]
    # Polled behind the throttled job, the others would be read once per throttled call at best
    # (a retry_after each) and wait out the storm's 10 s at worst; a loaded machine stretches a
    # normal gap to a few seconds.
    assert len(gaps) >= 2 * len(faulted) and max(gaps) < 6.0, gaps


def test_a_job_that_never_starts_under_a_storm_is_caught_at_the_first_read_past_the_limit(
    azure, tmp_path
):
    world = build(azure, cluster=dict(max_nodes=3))
    azure.admin("POST", "ml/faults", {"fault": "never_starts", "job": "^stormnever-.*-0001$"})
    since = azure.requests()[-1]["seq"]
    storm = azure.add_fault(
        method="GET",
        path=r"/runs/stormnever-[0-9a-f]+-0001/details$",
        status=429,
        retry_after=1,
        times=8,
    )
    tasks = TASKS[:6]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(world, "stormnever", tasks, ledger_path, startup_timeout=3.0)

    assert_every_task_once(ledger_path, tasks)
    never = nth_job(ledger_path, 1)
    [retry] = result.retries
    assert (retry.job_key, retry.code) == (never, "StartupTimeout")
    # Caught at the first read that got through after the limit had passed (the startup clock
    # runs from when the job started running in Azure ML, not from when the engine first saw it).
    reads = [
        r
        for r in azure.requests(since)
        if re.search(rf"/runs/{never}/details$", r["path"]) and r["fault"] is None
    ]
    started = ledger_jobs(ledger_path)[never].node_started_at
    assert started is not None
    first_through = next(r["ts"] for r in reads if r["ts"] > started + 3.0)
    assert retry.at <= first_through + 1.0
    faulted = [r for r in azure.requests(since) if r["fault"] == storm["id"]]
    assert len(faulted) == 8


# -- capacity -------------------------------------------------------------------------------------


def test_quota_lowered_under_the_cluster_runs_on_the_nodes_it_allows(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    # The cluster was made for 3 x 4 vCPUs; now the family's quota allows two nodes.
    azure.admin("PUT", "ml/quota", {"families": {"standardDSv5Family": 8}})
    tasks = TASKS[:12]
    ledger_path = tmp_path / "ledger.db"
    blocked = []

    tier = world.tier("quota")
    original_status = tier.status

    def status_watching_the_cluster(handle):
        # What a user would see on the cluster while the run waits for a node.
        cluster = azure_ml.compute_resource(world.ml_client, "waa").properties
        if cluster.properties.errors:
            blocked.append(cluster.properties.errors[0].error.code)
        return original_status(handle)

    tier.status = status_watching_the_cluster
    # A queued job's 5 s to get a node is short on a loaded machine: scale-up and preparation
    # are slower there, and a startup timeout would be a retry.
    result = EvaluationEngine(
        tier,
        tasks,
        ledger_path,
        engine_config("quota", tier.price_per_node_hour, startup_timeout=30.0),
        handle_signals=False,
    ).run()

    assert_every_task_once(ledger_path, tasks)
    assert result.retries == [] and len(result.tasks) == 12
    assert "QuotaExceeded" in blocked  # the cluster reported the failed scale-up
    statuses = assert_nothing_left_running(world)
    assert set(statuses.values()) == {"Completed"}
    # Never more nodes at once than the quota allows (a node scaled down between two jobs of a
    # loaded machine is replaced by another: more than two over the run).
    nodes = world.nodes()["value"]
    edges = sorted(
        [(n["acquired_at"], 1) for n in nodes]
        + [(n["released_at"], -1) for n in nodes if n["released_at"] is not None]
    )
    held = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert max(held) == 2, nodes


def test_preempted_low_priority_node_its_tasks_rerun_each_recorded_once(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3, priority="LowPriority"))
    # The first job's one task takes 1.4 s: it is mid-task when its node goes, 0.4 s in.
    azure.admin(
        "POST",
        "ml/faults",
        {
            "fault": "preempt",
            "job": "^preempt-.*-0001$",
            "after_output": "WAA_EVENT .*task_started",
            "after_s": 0.4,
        },
    )
    tasks = TASKS[:6]
    ledger_path = tmp_path / "ledger.db"

    result = run_engine(
        world, "preempt", tasks, ledger_path, job_environment={"WAA_STANDIN_TIME_SCALE": "0.15"}
    )

    rows = assert_every_task_once(ledger_path, tasks)
    preempted_job = nth_job(ledger_path, 1)
    [retry] = result.retries
    assert (retry.job_key, retry.code) == (preempted_job, "NodePreempted")
    first = ledger_jobs(ledger_path)[preempted_job]
    assert (first.state, first.failure_code) == ("FAILED", "NodePreempted")
    with Ledger(ledger_path) as ledger:
        preempted = [a for a in ledger.attempts() if a.failure_code == "NodePreempted"]
    [attempt] = preempted
    assert attempt.job_key == preempted_job and attempt.outcome == "error"
    assert rows[attempt.task_id].job_key != preempted_job
    assert result.tasks[attempt.task_id].attempts == 2
    unfinished = set(first.task_ids) - set(finished_in_log(world.std_log(preempted_job)))
    assert set(retry.requeued_task_ids) == unfinished
    assert all(rows[t].job_key != preempted_job for t in unfinished)
    statuses = assert_nothing_left_running(world)
    assert statuses.pop(preempted_job) == "Failed"
    assert world.run_error(preempted_job) == ("SystemError", "NodePreempted")
    assert set(statuses.values()) == {"Completed"}
    nodes = world.nodes()["value"]
    assert {node["priority"] for node in nodes} == {"LowPriority"}
    assert [node["release_reason"] for node in nodes].count("preempted") == 1
    assert result.cost.price_per_node_hour == pytest.approx(0.0416)


# -- the controller interrupted or killed ---------------------------------------------------------

SLOW_JOB_ENV = {**FAST_JOB_ENV, "WAA_STANDIN_TIME_SCALE": "0.1"}  # tasks of 0.5 to 1.2 s
# Tasks of 1 to 2.4 s: jobs the killed controller left are still running when the re-run starts.
KILLED_JOB_ENV = {**FAST_JOB_ENV, "WAA_STANDIN_TIME_SCALE": "0.2"}


def start_controller(
    azure, tmp_path, run_name, tasks, ledger_path, go_file=None, job_environment=SLOW_JOB_ENV
) -> subprocess.Popen:
    spec = {
        "go_file": str(go_file) if go_file else None,
        "resource_group": RG,
        "workspace": WORKSPACE,
        "compute": "waa",
        "environment": "azureml:waa:1",
        "run_name": run_name,
        "ledger": str(ledger_path),
        "tasks": [list(task) for task in tasks],
        "job_environment": {**NO_BOOT, **job_environment},
        "golden_image": GOLDEN_IMAGE_URI,
        "engine": {"workers": 3, "poll_interval": 0.2, "startup_timeout": 5.0, "stuck_after": 2.0},
    }
    with open(tmp_path / f"{run_name}.out", "w") as output:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, str(RUN_ENGINE), json.dumps(spec)],
            env={**os.environ, **azure.env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_until(controller: subprocess.Popen, ready, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert controller.poll() is None, "the controller ended before the test interrupted it"
        assert time.monotonic() < deadline, "the controller did not get there in time"
        time.sleep(0.05)


def test_ctrl_c_cancels_every_job_the_run_started(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    tasks = TASKS[:12]
    ledger_path = tmp_path / "ledger.db"
    controller = start_controller(azure, tmp_path, "ctrlc", tasks, ledger_path)

    def some_done_all_handed_out() -> bool:
        # Ctrl-C once every task is in a job the tier accepted: no submit can be under way.
        jobs = jobs_so_far(ledger_path)
        handed = sorted(t for _, ids in jobs.values() for t in ids)
        accepted = all(handle for handle, _ in jobs.values())
        return (
            accepted
            and handed == sorted(t for _, t in tasks)
            and len(results_so_far(ledger_path)) in range(2, 12)
        )

    wait_until(controller, some_done_all_handed_out)

    controller.send_signal(signal.SIGINT)

    assert controller.wait(30) == 130
    assert '{"status": "cancelled"}' in (tmp_path / "ctrlc.out").read_text()
    assert run_status(ledger_path) == "cancelled"
    with Ledger(ledger_path) as ledger:
        rows = ledger.results()
        assert ledger.duplicates_ignored == 0
    assert 2 <= len(rows) < 12
    jobs = ledger_jobs(ledger_path)
    cancelled = {key for key, job in jobs.items() if job.failure_code == "CancelledByEngine"}
    assert cancelled and all(jobs[key].state == "CANCELED" for key in cancelled)
    assert all(job.state == "COMPLETED" for key, job in jobs.items() if key not in cancelled)
    statuses = assert_nothing_left_running(world)
    assert set(statuses) == set(jobs)  # every job in Azure ML is one the ledger knows
    assert {statuses[key] for key in cancelled} <= {"Canceled", "Completed"}
    assert "Canceled" in {statuses[key] for key in cancelled}
    # Nothing was recorded for a task its cancelled job did not finish.
    for key in cancelled:
        finished = set(finished_in_log(world.std_log(key)))
        assert {t for t, row in rows.items() if row.job_key == key} <= finished


def test_ctrl_c_while_a_job_is_being_submitted_leaves_no_job_running(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    tasks = TASKS[:3]
    ledger_path = tmp_path / "ledger.db"
    go = tmp_path / "go"
    controller = start_controller(azure, tmp_path, "ctrlput", tasks, ledger_path, go_file=go)
    wait_until(controller, lambda: "ready" in (tmp_path / "ctrlput.out").read_text())
    # azure-ai-ml's create_or_update reads the cloud metadata after the job's PUT; slowed down,
    # that read holds the submit open for 1.5 s after Azure ML accepted the job.
    since = azure.requests()[-1]["seq"]
    azure.add_fault(method="GET", path=r"^/metadata/endpoints$", latency_ms=1500)
    go.touch()

    def first_job_accepted() -> bool:
        return any(
            r["method"] == "PUT"
            and re.search(r"/jobs/ctrlput-[0-9a-f]+-0001$", r["path"])
            and r["status"] < 300
            for r in azure.requests(since)
        )

    wait_until(controller, first_job_accepted)
    controller.send_signal(signal.SIGINT)

    assert controller.wait(30) == 130
    assert run_status(ledger_path) == "cancelled"
    first = nth_job(ledger_path, 1)
    # interrupted in the submit: the engine found the job by its name and cancelled it
    assert ledger_jobs(ledger_path)[first].state == "CANCELED"
    statuses = assert_nothing_left_running(world)
    # The round's other submits ran at the same time: their jobs were cancelled or had ended.
    assert statuses.pop(first) == "Canceled"
    assert set(statuses.values()) <= {"Canceled", "Completed"}  # none left running


def test_controller_killed_mid_run_then_rerun_records_every_task_once(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    tasks = TASKS[:12]
    ledger_path = tmp_path / "ledger.db"
    controller = start_controller(
        azure, tmp_path, "killed", tasks, ledger_path, job_environment=KILLED_JOB_ENV
    )
    wait_until(controller, lambda: len(results_so_far(ledger_path)) >= 2)

    controller.send_signal(signal.SIGKILL)
    controller.wait(10)
    with Ledger(ledger_path) as ledger:
        done_before = ledger.results()
        jobs_before = {job.job_key for job in ledger.jobs()}
    running_at_kill = {k for k, status in world.jobs().items() if status not in TERMINAL}
    assert 2 <= len(done_before) < 12
    assert running_at_kill and running_at_kill <= jobs_before
    time.sleep(3)  # a gap while no controller watches: its node time is part of the run's cost

    # The same ledger and run id: the re-run resumes.
    result = run_engine(world, "killed", tasks, ledger_path, job_environment=KILLED_JOB_ENV)

    rows = assert_every_task_once(ledger_path, tasks)
    assert result.duplicates_ignored == 0 and len(result.tasks) == 12
    with Ledger(ledger_path) as ledger:
        meta = ledger.run_meta()
        jobs = {job.job_key: job for job in ledger.jobs()}
    assert (meta.sessions, meta.status) == (2, "completed")
    for task_id, row in done_before.items():
        assert rows[task_id] == row  # results of the first session untouched
    # The jobs the dead controller left running were adopted: their logs read from the start,
    # each result taken once, and they finished their tasks (nothing was cancelled).
    statuses = assert_nothing_left_running(world)
    for key in running_at_kill:
        assert (jobs[key].state, jobs[key].failure_code) == ("COMPLETED", None)
        assert statuses[key] == "Completed"
        assert {t for t, row in rows.items() if row.job_key == key} == set(jobs[key].task_ids)
    # The re-run handed out only what no job of the first session finished.
    new_jobs = [key for key in jobs if key not in jobs_before]
    handed = [t for key in new_jobs for t in world.job_tasks(key)]
    by_first_session = {t for t, row in rows.items() if row.job_key in jobs_before}
    assert sorted(handed) == sorted(set(rows) - by_first_session)
    for key in new_jobs:
        assert statuses[key] == "Completed"
        assert set(finished_in_log(world.std_log(key))).isdisjoint(by_first_session)
    # The report is the whole run's: both sessions' jobs, its span from the first start, and
    # the node time of both sessions and of the gap between them, as the emulator counted it.
    assert result.sessions == 2 and result.jobs_submitted == len(jobs)
    assert result.started_at == meta.started_at
    assert result.makespan_s == pytest.approx(result.finished_at - meta.started_at)
    report = world.wait_scaled_down()
    [cluster] = report["computes"]
    assert result.cost.node_hours * 3600 == pytest.approx(cluster["node_seconds"], rel=0.10)
