"""The worker protocol: one ``WAA_EVENT {json}`` line per step on the worker's stdout.

The worker script (``worker/waa_worker.py``) ships alone to every tier and therefore carries its
own copy of ``format_event``; this module is the controller-side reference and parser.
Log channels interleave other output with the events and may deliver a line in pieces, so the
parser ignores anything that is not a complete event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

EVENT_PREFIX = "WAA_EVENT "
EVENT_NAMES = frozenset(
    {
        "started",
        "image_ready",
        "vm_starting",
        "vm_ready",
        "vm_lost",
        "warm_up",
        "task_started",
        "heartbeat",
        "task_result",
        "finished",
        "failed",
        # the task feed (FeedsTasks): waiting for entry ``seq``, took it, cannot read the feed
        "awaiting",
        "tasks_added",
        "feed_error",
    }
)
TASK_STATUSES = frozenset({"success", "fail", "error"})

_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class WorkerEvent:
    event: str
    ts: float
    worker: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str | None:
        return self.fields.get("task_id")

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def format_event(event: str, worker: str, ts: float | None = None, **fields: Any) -> str:
    """Return one event line (without newline)."""
    if event not in EVENT_NAMES:
        raise ValueError(f"unknown worker event {event!r}; expected one of {sorted(EVENT_NAMES)}")
    payload = {"event": event, "ts": time.time() if ts is None else ts, "worker": worker}
    payload.update(fields)
    return EVENT_PREFIX + json.dumps(payload, separators=(",", ":"), sort_keys=False)


def parse_event_line(line: str) -> WorkerEvent | None:
    """Parse one line; None for ordinary log output, truncated or malformed events.

    The prefix may be preceded by text a log channel adds (timestamps, stream names).
    """
    start = line.find(EVENT_PREFIX)
    if start < 0:
        return None
    body = line[start + len(EVENT_PREFIX) :].lstrip()
    try:
        payload, _end = _decoder.raw_decode(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    event = payload.pop("event", None)
    ts = payload.pop("ts", None)
    worker = payload.pop("worker", None)
    if event not in EVENT_NAMES or not isinstance(ts, (int, float)) or worker is None:
        return None
    if event == "task_result" and not _valid_task_result(payload):
        return None
    if event == "failed" and not (
        isinstance(payload.get("code"), str) and isinstance(payload.get("message"), str)
    ):
        return None
    return WorkerEvent(event=event, ts=float(ts), worker=str(worker), fields=payload)


def _valid_task_result(fields: dict[str, Any]) -> bool:
    if not isinstance(fields.get("task_id"), str) or fields.get("status") not in TASK_STATUSES:
        return False
    score = fields.get("score")
    return isinstance(score, (int, float)) and not isinstance(score, bool)


def parse_lines(lines: Iterable[str]) -> list[WorkerEvent]:
    """Parse complete lines, keeping only the events."""
    events = []
    for line in lines:
        parsed = parse_event_line(line)
        if parsed is not None:
            events.append(parsed)
    return events


class EventStreamParser:
    """Parses raw text that arrives in arbitrary pieces (a log being tailed).

    A trailing piece without a newline is held back until the rest of its line arrives.
    """

    def __init__(self) -> None:
        self._pending = ""
        self.ignored_lines = 0

    def feed_text(self, chunk: str) -> list[WorkerEvent]:
        text = self._pending + chunk
        lines = text.split("\n")
        self._pending = lines.pop()
        return self._parse(lines)

    def flush(self) -> list[WorkerEvent]:
        """Parse whatever is held back (the stream ended)."""
        rest, self._pending = self._pending, ""
        return self._parse([rest]) if rest else []

    def _parse(self, lines: list[str]) -> list[WorkerEvent]:
        events = []
        for line in lines:
            parsed = parse_event_line(line.rstrip("\r"))
            if parsed is None:
                if line.strip():
                    self.ignored_lines += 1
            else:
                events.append(parsed)
        return events
