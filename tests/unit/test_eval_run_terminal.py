"""eval_run's progress goes to the terminal ansible-playbook writes to: the action runs in a
forked worker whose own stdout is /dev/null, so it finds the terminal through its parent."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Stands in for ansible-playbook (whose stdout the test chooses) forking a worker that, like
# Ansible's, has /dev/null as its stdout.
_PLAYBOOK = """
import os, sys
from ansible_collections.openadapt.azure_eval.plugins.action import eval_run
pid = os.fork()
if pid == 0:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    terminal = eval_run._controller_terminal()
    os.write(2, b"terminal\\n" if terminal else b"none\\n")
    if terminal:
        terminal.write("drawn on the terminal\\n")
        terminal.close()
    os._exit(0)
os.waitpid(pid, 0)
"""


def _run(stdout, env_extra=None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("ANSIBLE_NOCOLOR", "NO_COLOR")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "collections"), str(REPO_ROOT)])
    env.update(env_extra or {})
    done = subprocess.run(
        [sys.executable, "-c", _PLAYBOOK],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        timeout=120,
        check=True,
    )
    return done.stderr.decode().strip()


def _read_until(fd: int, text: bytes, timeout: float = 30) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def test_the_worker_finds_the_terminal_of_ansible_playbook():
    master, slave = pty.openpty()
    try:
        assert _run(slave) == "terminal"
        assert b"drawn on the terminal" in _read_until(master, b"drawn on the terminal")
    finally:
        os.close(slave)
        os.close(master)


def test_no_terminal_when_ansible_playbook_writes_to_a_pipe_or_no_color_is_set():
    assert _run(subprocess.DEVNULL) == "none"
    master, slave = pty.openpty()
    try:
        assert _run(slave, {"NO_COLOR": "1"}) == "none"
    finally:
        os.close(slave)
        os.close(master)
