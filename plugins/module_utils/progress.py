"""Terminal progress for a run.

On a terminal: a rich progress bar with done/running/failed counts, retries and spend. Elsewhere
(CI logs, Ansible output files): one plain line every ``plain_interval_s`` and on completion.
It only ever receives counters, never configuration, so it cannot print a secret.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


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
        self.plain_interval_s = plain_interval_s
        self.clock = clock
        self.label = label
        self.last = ProgressCounters(total=total)
        self._last_plain_at: float | None = None
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None

    def start(self) -> None:
        if not self.is_tty or self._rich is not None:
            return
        console = Console(file=self.stream, force_terminal=True)
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
        if self.is_tty:
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
        if not self.is_tty:
            self._write_plain(self.last)

    def _write_plain(self, counters: ProgressCounters) -> None:
        self.stream.write(counters.plain_line() + "\n")
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
