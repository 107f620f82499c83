# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One controller per run: an exclusive OS file lock beside the ledger, held for the life of the
engine, and a watch on the process that started the engine.

The lock is ``flock`` on ``<ledger>.lock``: the kernel releases it when the holder dies however
it dies (SIGKILL included), so a stale lock of a dead process is simply taken over; the file
keeps the holder's pid, host and start time only to name it to a second controller, which
refuses at once. (``flock`` on a network file system is only as good as that file system's
locking; keep ``eval_state_dir`` on a local disk.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RunLocked(Exception):
    """Another controller holds the run's ledger."""


class RunLock:
    def __init__(self, ledger_path: str | Path) -> None:
        self.path = Path(f"{ledger_path}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(
                f"the run's ledger {str(self.path)[: -len('.lock')]} is in use by another "
                f"controller ({_describe(holder)}); nothing was started or cancelled. Wait for "
                "it to finish or stop it, then run again to resume"
            ) from None
        stale = _read_holder(fd)
        if stale.get("pid"):
            log.info("taking over the run lock of %s (no longer running)", _describe(stale))
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "holder unknown"
    since = holder.get("since")
    started = (
        time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
        if isinstance(since, (int, float))
        else ""
    )
    return f"pid {holder['pid']} on host {holder.get('host', '?')}{started}"


class ParentWatch:
    """Calls ``on_gone`` once when the process that started this one has died (its parent pid
    changes: the orphan is re-parented to init or a subreaper). Ansible's worker process runs in
    a session of its own, so a SIGKILL of ``ansible-playbook`` reaches nothing else."""

    def __init__(self, on_gone: Callable[[], None], interval: float = 0.5) -> None:
        self._parent = os.getppid()
        self._on_gone = on_gone
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="parent-watch", daemon=True)

    @property
    def parent_alive(self) -> bool:
        return os.getppid() == self._parent

    def start(self) -> ParentWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            if not self.parent_alive:
                log.warning("the controller (pid %d) is gone: stopping the run", self._parent)
                self._on_gone()
                return
