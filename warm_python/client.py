"""Run one module script in a warm server's child, as if this process ran it.

Falls back to the real interpreter (``exec``) whenever the module has not started in a warm
child: no server yet (one is started for the next module), a server going away, any error. A
module that finds a server still warming up (another module started it) waits for it, at most
as long again as the warm-up has taken so far: the rest of a warm-up is usually shorter than a
cold start (which would also take CPU from it), and on a loaded machine the wait stays within
what a cold start costs there.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from warm_python import endpoint

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
_STDIO = [0, 1, 2]
_RETRY_FAILED_START_S = 60
_WAIT_FOR_WARM_UP_S = (1.0, 15.0)  # at least, at most


def _run_cold(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, *argv])


def _failed_recently(log: Path) -> bool:
    try:
        info = log.stat()
    except FileNotFoundError:
        return False
    return info.st_size > 0 and time.time() - info.st_mtime < _RETRY_FAILED_START_S


def _server_holds_lock(path: Path) -> bool:
    """A server of this environment is warming up, serving or ending (it holds the lock for
    its whole life)."""
    lock = os.open(endpoint.lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(lock)
    return False


def _start_server(path: Path) -> bool:
    """Start a server for this environment unless one is there already, or the last one could
    not start a moment ago (its log says why). True when one is there, warming up."""
    log = endpoint.log_path(path)
    if _failed_recently(log):
        return False
    if _server_holds_lock(path):
        return True
    with open(log, "ab") as output:
        subprocess.Popen(
            [sys.executable, "-m", "warm_python.server", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            cwd="/",
        )
    return False


def _wait_for_warm_up(path: Path) -> socket.socket | None:
    """The server's connection once it is warm; None if it ends or takes longer again than
    it has taken so far."""
    try:
        warming_for = time.time() - endpoint.lock_path(path).stat().st_mtime
    except FileNotFoundError:
        return None
    shortest, longest = _WAIT_FOR_WARM_UP_S
    deadline = time.monotonic() + min(longest, max(shortest, warming_for))
    while time.monotonic() < deadline:
        time.sleep(0.05)
        conn = _connect(path)
        if conn is not None:
            return conn
        if not _server_holds_lock(path):
            return None
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _connect(path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _wait_for(pid: int, replies) -> int:
    forwarded: list[int] = []

    def forward(number, _frame):
        forwarded.append(number)
        os.kill(pid, number)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    status = replies.readline()
    if status:
        return int(status)
    if forwarded:  # ended by the signal it was sent: end the same way, as the caller expects
        signal.signal(forwarded[-1], signal.SIG_DFL)
        os.kill(os.getpid(), forwarded[-1])
    sys.stderr.write("warm-python: the module's process ended without an exit status\n")
    return 1


def _start(argv: list[str]):
    """The child's pid and its reply stream, or None when the module has not started warm."""
    path = endpoint.socket_path(dict(os.environ))
    conn = _connect(path)
    if conn is None and _start_server(path):
        conn = _wait_for_warm_up(path)
    if conn is None:
        return None
    request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": _umask()}
    endpoint.send_request(conn, request, _STDIO)
    replies = conn.makefile("rb")
    started = replies.readline()
    return (int(started), replies) if started else None


def main(argv: list[str]) -> None:
    try:
        started = _start(argv)
    except OSError:
        started = None
    if started is None:
        _run_cold(argv)
    sys.exit(_wait_for(*started))


if __name__ == "__main__":
    main(sys.argv[1:])
