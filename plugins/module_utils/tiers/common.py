# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What tiers share: the worker's command line and task feed entries, the node meter of a pool,
and a cursor that follows a log over HTTP with ranged reads."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests

_HEREDOC_END = "WAA_WORKER_PY_EOF"


class MissingRequirement(ValueError):
    """A Python library the tier needs is not installed (the message says which)."""


class InvalidOption(ValueError):
    """A tier option that cannot work (the message names it and says what it takes)."""


class UnknownPrice(ValueError):
    """No price is known for the tier's VM size and priority: the run's cost cannot be told."""


def worker_args(job_key: str, task_ids: list[str]) -> list[str]:
    """The worker's own arguments for one job."""
    return ["--worker-id", job_key, "--task-ids", ",".join(task_ids)]


TASK_FEED_ENV = "WAA_TASK_FEED"


def feed_entry(task_ids: Sequence[str]) -> bytes:
    """A task feed entry as the worker reads it (worker/waa_worker.py's ``TaskFeed``)."""
    return json.dumps({"task_ids": list(task_ids)}).encode("utf-8")


def check_container_url(option: str, url: str) -> None:
    """``url``, if given, names a blob container: https://<account>.<blob endpoint>/<container>."""
    if not url:
        return
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme != "https" or not parts.netloc or len(segments) != 1 or parts.query:
        raise InvalidOption(
            f"{option} must be a blob container's URL, "
            f"https://<account>.blob.core.windows.net/<container>; got {url!r}"
        )


def worker_environment(job_environment: Mapping[str, str], golden_image: bool) -> dict[str, str]:
    """The job's environment for its worker: on a tier that mounts no golden image the worker
    skips WAA's VM boot (``WAA_VM_BOOT=0``), unless the job environment turns it on."""
    if golden_image:
        return dict(job_environment)
    return {"WAA_VM_BOOT": "0", **job_environment}


def worker_command(
    worker_script: str,
    job_key: str,
    task_ids: list[str],
    extra_args: Sequence[str] = (),
    shell_words: Sequence[str] = (),
) -> str:
    """A shell command that writes the worker script, then runs it on the job's tasks (for
    tiers that run a command line and have no code upload); ``extra_args`` go to the worker
    (``--golden-image-path <where the tier mounts it>``), quoted; ``shell_words`` follow them
    as they are, for the shell to expand (the caller quotes what must stay literal)."""
    if _HEREDOC_END in worker_script:
        raise ValueError("the worker script contains the heredoc terminator")
    args = " ".join([shlex.join([*worker_args(job_key, task_ids), *extra_args]), *shell_words])
    return (
        f"cat > waa_worker.py <<'{_HEREDOC_END}'\n{worker_script.rstrip()}\n{_HEREDOC_END}\n"
        f"python -u waa_worker.py {args}"
    )


class NodeMeter:
    """Integrates a pool's allocated node count over time.

    ``read`` answers (allocated nodes, busy nodes); it is called at most every ``interval``
    seconds unless a sample is forced."""

    def __init__(self, read: Callable[[], tuple[int, int]], interval: float):
        self._read = read
        self._interval = interval
        self.node_seconds = 0.0
        self.nodes = 0
        self._at: float | None = None
        self._idle_since: float | None = None
        self._lock = threading.Lock()

    def sample(self, now: float, *, force: bool = False) -> None:
        # Jobs are polled from several threads: one sample at a time, each interval once.
        with self._lock:
            if self._at is not None and not force and now - self._at < self._interval:
                return
            if self._at is not None and now < self._at:
                return  # a thread that read the clock before another's sample
            nodes, busy = self._read()
            if self._at is not None:
                self.node_seconds += self.nodes * max(now - self._at, 0.0)
            if busy == 0 and nodes > 0:
                self._idle_since = self._idle_since if self._idle_since is not None else now
            else:
                self._idle_since = None
            self.nodes, self._at = nodes, now

    def seconds_until(self, now: float) -> float:
        """Node time up to ``now``: the nodes of the last sample held since it (what the next
        sample will add), so that a session killed between samples leaves no hole."""
        with self._lock:
            if self._at is None:
                return self.node_seconds
            return self.node_seconds + self.nodes * max(now - self._at, 0.0)

    def idle_for(self, now: float) -> float:
        return now - self._idle_since if self._idle_since is not None else 0.0


@dataclass
class RangedLog:
    """Follows a growing log at ``url`` from the offset already read, so that a read costs one
    small request whatever the log's length; returns complete lines only."""

    url: str | None = None
    offset: int = 0
    partial: str = ""

    def read_new_lines(self, http: requests.Session, timeout: float = 30) -> list[str]:
        if self.url is None:
            return []
        response = http.get(self.url, headers={"Range": f"bytes={self.offset}-"}, timeout=timeout)
        if response.status_code == 416 or not response.content:
            return []
        response.raise_for_status()
        body = response.content
        if response.status_code == 200:  # the server ignored the range: skip what was read
            body = body[self.offset :]
        self.offset += len(body)
        text = self.partial + body.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self.partial = lines.pop()
        return [line.rstrip("\r") for line in lines]
