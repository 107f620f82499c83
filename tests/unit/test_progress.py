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
        "2 jobs, 2 retries, $1.23 spent"
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
