from __future__ import annotations

import io

from ansible_collections.openadapt.azure_eval.plugins.module_utils.progress import (
    ProgressCounters,
    RunProgress,
)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_when_not_a_terminal_are_periodic():
    stream, clock = io.StringIO(), Clock()
    progress = RunProgress(12, stream=stream, plain_interval_s=10, clock=clock)
    assert progress.is_tty is False
    progress.start()
    progress.update(ProgressCounters(total=12, done=1, succeeded=1, running=3, spend_usd=0.01))
    clock.now = 5
    progress.update(ProgressCounters(total=12, done=2, succeeded=2, running=3))  # too soon
    clock.now = 11
    progress.update(
        ProgressCounters(
            total=12,
            done=5,
            succeeded=3,
            failed=1,
            errored=1,
            running=2,
            retries=2,
            spend_usd=1.234,
            active_jobs=2,
        )
    )
    progress.stop()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("progress: 1/12 done")
    assert lines[1] == (
        "progress: 5/12 done (3 succeeded, 1 failed, 1 errors), 2 running on "
        "2 jobs, 2 retries, $1.23 spent; elapsed 11s, 21.8 tasks/min, ETA 19s"
    )
    assert len(lines) == 3  # the final line on stop
    assert "\x1b[" not in stream.getvalue()


def test_rich_bar_on_a_terminal_shows_counts():
    stream = io.StringIO()
    with RunProgress(4, stream=stream, is_tty=True) as progress:
        progress.update(
            ProgressCounters(
                total=4, done=3, succeeded=2, failed=1, running=1, retries=1, spend_usd=0.5
            )
        )
    text = stream.getvalue()
    assert "3/4" in text and "2 ok" in text and "1 retries" in text and "$0.50" in text


def test_rate_and_eta_count_only_this_sessions_tasks():
    """A resumed run starts with tasks done by an earlier session: they do not make it fast."""
    stream, clock = io.StringIO(), Clock()
    progress = RunProgress(100, stream=stream, plain_interval_s=60, clock=clock)
    progress.start()
    progress.update(ProgressCounters(total=100, done=80))
    clock.now = 120
    progress.update(ProgressCounters(total=100, done=90))
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("; elapsed 0s, rate -, ETA -")
    assert lines[1].endswith("; elapsed 2m00s, 5.0 tasks/min, ETA 2m00s")


def test_without_rich_a_terminal_gets_plain_lines(monkeypatch):
    from ansible_collections.openadapt.azure_eval.plugins.module_utils import progress as module

    monkeypatch.setattr(module, "RICH_IMPORT_ERROR", "ModuleNotFoundError: rich")
    stream = io.StringIO()
    with RunProgress(2, stream=stream, is_tty=True) as progress:
        progress.update(ProgressCounters(total=2, done=1, succeeded=1))
    assert stream.getvalue().startswith("progress: 1/2 done")


def test_rich_bar_shows_elapsed_and_remaining():
    stream, clock = io.StringIO(), Clock()
    with RunProgress(4, stream=stream, is_tty=True, clock=clock) as progress:
        progress.update(ProgressCounters(total=4, done=2, succeeded=2))
    text = stream.getvalue()
    assert "eta" in text and "0:00:0" in text
