from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_lock import (
    ParentWatch,
    RunLock,
    RunLocked,
)

HOLD = """
import sys, time
sys.path[:0] = sys.argv[2:]
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_lock import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_in_another_process(ledger):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ledger), *sys.path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_with_the_holders_pid_and_host(tmp_path):
    ledger = tmp_path / "ledger.sqlite3"
    holder = hold_in_another_process(ledger)
    try:
        with pytest.raises(RunLocked) as refused:
            RunLock(ledger).acquire()
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "nothing was started or cancelled" in message
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path):
    ledger = tmp_path / "ledger.sqlite3"
    holder = hold_in_another_process(ledger)
    holder.kill()  # SIGKILL: no clean-up; the file still names the dead holder
    holder.wait()
    assert json.loads((tmp_path / "ledger.sqlite3.lock").read_text())["pid"] == holder.pid

    with RunLock(ledger):
        assert json.loads((tmp_path / "ledger.sqlite3.lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunLocked):
            RunLock(ledger).acquire()  # one holder per run, in one process too
    with RunLock(ledger):  # released on exit
        pass


def test_parent_watch_calls_back_when_the_parent_dies(tmp_path):
    marker = tmp_path / "gone"
    child = f"""
import os, sys, time
sys.path[:0] = {sys.path!r}
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_lock import ParentWatch
ParentWatch(lambda: (open({str(marker)!r}, "w").close(), os._exit(0)), interval=0.05).start()
print("watching", flush=True)
time.sleep(30)
"""
    # A parent that starts the watcher and is then killed.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout.readline().strip() == "watching"
        assert not marker.exists()
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, "the watcher did not see its parent die"
            time.sleep(0.05)
    finally:
        parent.kill()
    assert ParentWatch(lambda: None).parent_alive
