from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    parse_lines,
)
from localazure.workload import task_model

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = REPO_ROOT / "worker" / "waa_worker.py"
STANDIN = f"{shlex.quote(sys.executable)} -m localazure.workload.waa_standin"

# A WAA client that records its pid and then sleeps: for testing what happens to a running client.
SLEEPY_CLIENT = """
import os, sys, time
open(os.environ["CLIENT_PID_FILE"], "w").write(str(os.getpid()))
print("client up", flush=True)
time.sleep(60)
"""


def worker_cmd(tmp_path, task_ids, heartbeat=0.1, meta=task_model.SYNTHETIC_TEST_ALL):
    return [
        sys.executable,
        str(WORKER),
        "--worker-id",
        "w-1",
        "--task-ids",
        ",".join(task_ids),
        "--test-all-meta",
        str(meta),
        "--result-dir",
        str(tmp_path / "results"),
        "--heartbeat-interval",
        str(heartbeat),
    ]


def worker_env(**extra):
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        WAA_CLIENT_CMD=STANDIN,
        WAA_STANDIN_TIME_SCALE="0.003",
        WAA_VM_BOOT="0",
    )
    env.update(extra)
    return env


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def wait_dead(pid, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_runs_each_task_and_reports_results_from_result_txt(tmp_path):
    tasks = task_model.list_tasks()[20:23]
    ids = [t for _, t in tasks]
    proc = subprocess.run(
        worker_cmd(tmp_path, ids), env=worker_env(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    events = parse_lines(proc.stdout.splitlines())
    names = [e.event for e in events if e.event != "heartbeat"]
    assert names == ["started"] + ["task_started", "task_result"] * 3 + ["finished"]
    assert events[0].get("task_ids") == ids and all(e.worker == "w-1" for e in events)
    results = [e for e in events if e.event == "task_result"]
    for (domain, task_id), event in zip(tasks, results, strict=True):
        success = task_model.modelled_success(domain, task_id)
        assert event.task_id == task_id and event.get("domain") == domain
        assert event.get("status") == ("success" if success else "fail")
        assert event.get("score") == (1.0 if success else 0.0)
        assert event.get("error") is None and event.get("duration_s") > 0
    assert events[-1].get("completed") == 3
    # Only event lines on stdout; the client's log goes to stderr.
    assert all(line.startswith("WAA_EVENT ") for line in proc.stdout.splitlines())
    assert f"[Example ID]: {ids[0]}" in proc.stderr


def test_crashing_client_gives_an_error_result_and_the_worker_goes_on(tmp_path):
    ids = [t for _, t in task_model.list_tasks()[:2]]
    proc = subprocess.run(
        worker_cmd(tmp_path, ids),
        env=worker_env(WAA_STANDIN_CRASH_TASK=ids[0]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    results = [e for e in parse_lines(proc.stdout.splitlines()) if e.event == "task_result"]
    assert results[0].get("status") == "error" and results[0].get("score") == 0.0
    assert "exited with code 1" in results[0].get("error")
    assert "simulated WAA client crash" in results[0].get("error")
    assert results[1].get("status") in ("success", "fail")


def test_missing_result_unknown_task_and_missing_client_are_errors(tmp_path):
    ids = [t for _, t in task_model.list_tasks()[:1]]
    quiet = subprocess.run(
        worker_cmd(tmp_path, ids),
        env=worker_env(WAA_CLIENT_CMD="true"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    [result] = [e for e in parse_lines(quiet.stdout.splitlines()) if e.event == "task_result"]
    assert result.get("status") == "error" and "wrote no result.txt" in result.get("error")

    unknown = subprocess.run(
        worker_cmd(tmp_path, ["not-a-task-WOS"]),
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    [result] = [e for e in parse_lines(unknown.stdout.splitlines()) if e.event == "task_result"]
    assert result.get("status") == "error" and "not found in the test_all meta" in result.get(
        "error"
    )

    missing = subprocess.run(
        worker_cmd(tmp_path, ids),
        env=worker_env(WAA_CLIENT_CMD="/nonexistent/waa-client"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    [result] = [e for e in parse_lines(missing.stdout.splitlines()) if e.event == "task_result"]
    assert "could not start the WAA client" in result.get("error")


def test_one_task_meta_file_has_waa_shape(tmp_path):
    domain, task_id = task_model.list_tasks()[60]
    dump = tmp_path / "meta-seen.json"
    client = tmp_path / "client.py"
    client.write_text(
        "import sys, shutil\n"
        "args = sys.argv[1:]\n"
        f"shutil.copy(args[args.index('--test_all_meta_path') + 1], {str(dump)!r})\n"
        "sys.exit(3)\n"
    )
    proc = subprocess.run(
        worker_cmd(tmp_path, [task_id]),
        env=worker_env(WAA_CLIENT_CMD=f"{sys.executable} {client}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(dump.read_text()) == {domain: [task_id]}
    [result] = [e for e in parse_lines(proc.stdout.splitlines()) if e.event == "task_result"]
    assert "exited with code 3" in result.get("error")


def test_heartbeats_report_the_task_and_how_long_the_client_is_silent(tmp_path):
    ids = [t for _, t in task_model.list_tasks()[:1]]
    proc = subprocess.Popen(
        worker_cmd(tmp_path, ids, heartbeat=0.1),
        env=worker_env(WAA_STANDIN_STUCK_TASK=ids[0]),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    beats = []

    def silences() -> list[float]:
        return [b.get("client_idle_s") for b in beats if b.get("client_idle_s") is not None]

    try:
        deadline = time.time() + 20
        # The stuck client stopped talking: its silence keeps growing in the heartbeats. Read
        # until both hold, however a loaded machine spaces the heartbeats out.
        while len(beats) < 5 or not silences() or silences()[-1] < 0.5:
            assert time.time() < deadline, beats[-3:]
            beats += [e for e in parse_lines([proc.stdout.readline()]) if e.event == "heartbeat"]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert len(beats) >= 5
    assert all(b.task_id == ids[0] for b in beats)
    idle = silences()
    # The client's first lines restart the count; its silence then grows to the end.
    assert idle[-1] > idle[0]


def test_sigterm_kills_the_client_prints_nothing_more_and_exits_143(tmp_path):
    pid_file = tmp_path / "client.pid"
    client = tmp_path / "client.py"
    client.write_text(SLEEPY_CLIENT)
    ids = [t for _, t in task_model.list_tasks()[:2]]
    proc = subprocess.Popen(
        worker_cmd(tmp_path, ids, heartbeat=0.05),
        env=worker_env(WAA_CLIENT_CMD=f"{sys.executable} {client}", CLIENT_PID_FILE=str(pid_file)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines = [proc.stdout.readline(), proc.stdout.readline()]
    deadline = time.time() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline
        time.sleep(0.02)
    client_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == 143
    events = parse_lines(lines + rest.splitlines())
    assert [e.event for e in events if e.event != "heartbeat"] == ["started", "task_started"]
    assert wait_dead(client_pid)


def test_worker_stops_when_its_reader_goes_away(tmp_path):
    pid_file = tmp_path / "client.pid"
    client = tmp_path / "client.py"
    client.write_text(SLEEPY_CLIENT)
    ids = [t for _, t in task_model.list_tasks()[:1]]
    proc = subprocess.Popen(
        worker_cmd(tmp_path, ids, heartbeat=0.05),
        env=worker_env(WAA_CLIENT_CMD=f"{sys.executable} {client}", CLIENT_PID_FILE=str(pid_file)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    proc.stdout.readline()
    deadline = time.time() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline
        time.sleep(0.02)
    proc.stdout.close()  # the controller died
    assert proc.wait(timeout=10) == 141
    assert wait_dead(int(pid_file.read_text()))


@pytest.mark.parametrize("args", [["--task-ids", ","], ["--heartbeat-interval", "0"]])
def test_bad_arguments_are_refused(tmp_path, args):
    cmd = worker_cmd(tmp_path, ["x"])
    for flag, value in zip(args[::2], args[1::2], strict=False):
        cmd[cmd.index(flag) + 1] = value
    proc = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""


def test_unreadable_meta_file_exits_2_before_any_event(tmp_path):
    proc = subprocess.run(
        worker_cmd(tmp_path, ["x"], meta=tmp_path / "missing.json"),
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "cannot read" in proc.stderr


def test_worker_is_a_standalone_python38_stdlib_script():
    import ast

    tree = ast.parse(WORKER.read_text(), feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    # Newer-than-3.8 annotations are fine only because they are never evaluated.
    assert "from __future__ import annotations" in WORKER.read_text()


# A client wrapper that records each start, then runs the stand-in.
COUNTING_CLIENT = """
import os, runpy, sys
with open(os.environ["CLIENT_STARTS"], "a") as starts:
    starts.write("start\\n")
sys.argv = ["waa_standin"] + sys.argv[1:]
runpy.run_module("localazure.workload.waa_standin", run_name="__main__")
"""


def counting_client(tmp_path):
    client = tmp_path / "client.py"
    client.write_text(COUNTING_CLIENT)
    return f"{sys.executable} {client}", tmp_path / "starts.txt"


def test_batch_mode_runs_every_task_through_one_client_with_the_same_events(tmp_path):
    tasks = task_model.list_tasks()
    picked = [tasks[0], tasks[60], tasks[1], tasks[61]]  # two domains, interleaved
    ids = [t for _, t in picked]
    client_cmd, starts = counting_client(tmp_path)
    proc = subprocess.run(
        worker_cmd(tmp_path, ids),
        env=worker_env(WAA_CLIENT_BATCH="1", WAA_CLIENT_CMD=client_cmd, CLIENT_STARTS=str(starts)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert starts.read_text().count("start") == 1
    events = parse_lines(proc.stdout.splitlines())
    names = [e.event for e in events if e.event != "heartbeat"]
    assert names == ["started"] + ["task_started", "task_result"] * 4 + ["finished"]
    results = {e.task_id: e for e in events if e.event == "task_result"}
    assert sorted(results) == sorted(ids)
    for domain, task_id in picked:
        success = task_model.modelled_success(domain, task_id)
        assert results[task_id].get("status") == ("success" if success else "fail")
        assert results[task_id].get("domain") == domain
        assert results[task_id].get("duration_s") > 0
    started = [e.task_id for e in events if e.event == "task_started"]
    # In WAA's own order: the meta file's domains, each domain's tasks in the given order.
    assert started == [ids[0], ids[2], ids[1], ids[3]]
    assert events[-1].get("completed") == 4


def test_batch_mode_restarts_the_client_for_the_tasks_after_a_crash(tmp_path):
    ids = [t for _, t in task_model.list_tasks()[:3]]
    client_cmd, starts = counting_client(tmp_path)
    proc = subprocess.run(
        worker_cmd(tmp_path, ids),
        env=worker_env(
            WAA_CLIENT_BATCH="1",
            WAA_CLIENT_CMD=client_cmd,
            CLIENT_STARTS=str(starts),
            WAA_STANDIN_CRASH_TASK=ids[1],
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    results = [e for e in parse_lines(proc.stdout.splitlines()) if e.event == "task_result"]
    assert [e.task_id for e in results] == ids
    assert results[0].get("status") in ("success", "fail")
    assert results[1].get("status") == "error"
    assert "simulated WAA client crash" in results[1].get("error")
    assert results[2].get("status") in ("success", "fail")
    assert starts.read_text().count("start") == 2  # one for the crash, one for the rest


def test_batch_mode_client_exiting_without_results_fails_each_task_once(tmp_path):
    ids = [t for _, t in task_model.list_tasks()[:2]]
    proc = subprocess.run(
        worker_cmd(tmp_path, ids),
        env=worker_env(WAA_CLIENT_BATCH="1", WAA_CLIENT_CMD="true"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    results = [e for e in parse_lines(proc.stdout.splitlines()) if e.event == "task_result"]
    assert [e.task_id for e in results] == ids
    assert all("wrote no result.txt" in e.get("error") for e in results)


# -- the task feed ------------------------------------------------------------------------------


def feed_events(tmp_path, first, entries, *, wait="5", late=None):
    """Run the worker on ``first`` with a feed folder holding ``entries`` (seq -> task ids, or
    raw bytes); ``late``: (seq, task ids) written once the worker says it awaits that entry."""
    feed = tmp_path / "feed"
    feed.mkdir()
    for seq, entry in entries.items():
        body = entry if isinstance(entry, bytes) else json.dumps({"task_ids": entry}).encode()
        (feed / f"{seq}.json").write_bytes(body)
    env = worker_env(WAA_TASK_FEED=str(feed), WAA_TASK_FEED_WAIT=wait)
    proc = subprocess.Popen(worker_cmd(tmp_path, first), env=env, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if late and '"event":"awaiting"' in line and f'"seq":{late[0]}' in line:
            (feed / f"{late[0]}.json").write_text(json.dumps({"task_ids": late[1]}))
    assert proc.wait(timeout=30) == 0
    return parse_lines(lines)


def test_feed_entries_run_on_the_same_worker_until_an_empty_one(tmp_path):
    ids = [t for _, t in task_model.list_tasks()[:5]]
    events = feed_events(tmp_path, ids[:2], {1: ids[2:4], 2: [ids[4]], 3: []})
    results = [e.task_id for e in events if e.event == "task_result"]
    assert results == ids
    added = [(e.get("seq"), e.get("task_ids")) for e in events if e.event == "tasks_added"]
    assert added == [(1, ids[2:4]), (2, [ids[4]])]
    # Every entry was there when asked for: the worker never said it was waiting.
    assert [e for e in events if e.event == "awaiting"] == []
    assert events[-1].event == "finished" and events[-1].get("completed") == 5


def test_feed_entry_written_late_is_awaited_then_run(tmp_path):
    ids = [t for _, t in task_model.list_tasks()[:3]]
    events = feed_events(tmp_path, ids[:1], {2: []}, late=(1, ids[1:]))
    names = [e.event for e in events]
    assert names.index("awaiting") < names.index("tasks_added")
    assert [e.task_id for e in events if e.event == "task_result"] == ids


def test_feed_without_an_entry_ends_the_job_after_the_wait(tmp_path):
    [task_id] = [t for _, t in task_model.list_tasks()[:1]]
    started = time.monotonic()
    events = feed_events(tmp_path, [task_id], {}, wait="0.5")
    assert 0.5 <= time.monotonic() - started < 10
    names = [e.event for e in events if e.event != "heartbeat"]
    assert names[-3:] == ["task_result", "awaiting", "finished"]


def test_malformed_feed_entry_is_a_feed_error_and_the_job_ends(tmp_path):
    [task_id] = [t for _, t in task_model.list_tasks()[:1]]
    events = feed_events(tmp_path, [task_id], {1: b'{"task_ids": "not a list"}'})
    [error] = [e for e in events if e.event == "feed_error"]
    assert error.get("seq") == 1 and "task_ids" in error.get("message")
    assert events[-1].event == "finished" and events[-1].get("completed") == 1
