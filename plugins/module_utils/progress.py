# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Terminal progress for a run.

On a terminal: a rich progress bar with done/total, running/failed counts, retries, spend,
elapsed time, rate and time remaining. Elsewhere (CI logs, Ansible output), or without rich: one
plain line every ``plain_interval_s`` and on completion, with the same figures. It only ever
receives counters, never configuration, so it cannot print a secret.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

try:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    RICH_IMPORT_ERROR = None
except ImportError:  # plain lines only
    RICH_IMPORT_ERROR = traceback.format_exc()


@dataclass(frozen=True)
class ProgressCounters:
    total: int
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    running: int = 0
    retries: int = 0
    spend_usd: float = 0.0
    active_jobs: int = 0

    def plain_line(self) -> str:
        return (
            f"progress: {self.done}/{self.total} done ({self.succeeded} succeeded, "
            f"{self.failed} failed, {self.errored} errors), {self.running} running on "
            f"{self.active_jobs} jobs, {self.retries} retries, ${self.spend_usd:.2f} spent"
        )


def format_duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def timing_text(elapsed_s: float, done_here: int, remaining: int) -> str:
    """Elapsed time, rate and estimated time to finish, from the tasks finished in this session
    (a resumed run's earlier results say nothing about this session's speed)."""
    text = f"elapsed {format_duration(elapsed_s)}"
    if done_here <= 0 or elapsed_s <= 0:
        return text + ", rate -, ETA -"
    per_minute = done_here / elapsed_s * 60
    eta = remaining / (done_here / elapsed_s)
    return text + f", {per_minute:.1f} tasks/min, ETA {format_duration(eta)}"


class RunProgress:
    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        is_tty: bool | None = None,
        plain_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        label: str = "WAA tasks",
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.is_tty = _isatty(self.stream) if is_tty is None else is_tty
        # Without rich a terminal gets the plain lines.
        self.use_bar = self.is_tty and RICH_IMPORT_ERROR is None
        self.plain_interval_s = plain_interval_s
        self.clock = clock
        self.label = label
        self.last = ProgressCounters(total=total)
        self._last_plain_at: float | None = None
        self._rich = None
        self._task = None
        self._started_at: float | None = None
        self._done_at_start: int | None = None

    def start(self) -> None:
        if self._started_at is None:
            self._started_at = self.clock()
        if not self.use_bar or self._rich is not None:
            return
        # A real terminal has a width of its own; a forced one (a pipe to a terminal) gets room
        # for every column.
        width = None if _isatty(self.stream) else 160
        console = Console(file=self.stream, force_terminal=True, width=width)
        self._rich = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]{task.fields[succeeded]} ok[/] [red]{task.fields[failed]} failed[/] "
                "[yellow]{task.fields[errored]} errors[/] | {task.fields[running]} running | "
                "{task.fields[retries]} retries | ${task.fields[spend]:.2f}"
            ),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._rich.add_task(
            self.label,
            total=self.last.total,
            succeeded=0,
            failed=0,
            errored=0,
            running=0,
            retries=0,
            spend=0.0,
        )
        self._rich.start()

    def update(self, counters: ProgressCounters) -> None:
        if self._started_at is None:
            self._started_at = self.clock()
        if self._done_at_start is None:
            self._done_at_start = counters.done
        self.last = counters
        if self._rich is not None and self._task is not None:
            self._rich.update(
                self._task,
                completed=counters.done,
                total=counters.total,
                succeeded=counters.succeeded,
                failed=counters.failed,
                errored=counters.errored,
                running=counters.running,
                retries=counters.retries,
                spend=counters.spend_usd,
            )
            return
        if self.use_bar:
            return
        now = self.clock()
        if self._last_plain_at is None or now - self._last_plain_at >= self.plain_interval_s:
            self._write_plain(counters)
            self._last_plain_at = now

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
            return
        if not self.use_bar:
            self._write_plain(self.last)

    def timing(self, counters: ProgressCounters) -> str:
        started = self._started_at if self._started_at is not None else self.clock()
        return timing_text(
            self.clock() - started,
            counters.done - (self._done_at_start or 0),
            counters.total - counters.done,
        )

    def _write_plain(self, counters: ProgressCounters) -> None:
        self.stream.write(f"{counters.plain_line()}; {self.timing(counters)}\n")
        self.stream.flush()

    def __enter__(self) -> RunProgress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
