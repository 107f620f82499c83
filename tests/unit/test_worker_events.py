from __future__ import annotations

import json

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    EventStreamParser,
    format_event,
    parse_event_line,
    parse_lines,
)


def test_format_then_parse_round_trips_fields():
    line = format_event("task_result", "w1", ts=12.5, task_id="t1", status="success", score=1.0)
    event = parse_event_line(line)
    assert event is not None
    assert (event.event, event.ts, event.worker, event.task_id) == ("task_result", 12.5, "w1", "t1")
    assert event.get("status") == "success" and event.get("score") == 1.0
    assert "\n" not in line


def test_format_rejects_unknown_event():
    with pytest.raises(ValueError, match="unknown worker event"):
        format_event("exploded", "w1")


def test_ordinary_log_lines_and_broken_events_are_ignored():
    lines = [
        "[2026-01-18 10:00:00 INFO run/101] [Domain]: chrome",
        'WAA_EVENT {"event": "started", "ts": 1.0, "worker": "w',  # cut off mid-line
        'WAA_EVENT {"event": "nonsense", "ts": 1.0, "worker": "w"}',
        'WAA_EVENT {"event": "heartbeat", "worker": "w"}',  # no ts
        'WAA_EVENT {"event": "task_result", "ts": 1.0, "worker": "w", "task_id": "t"}',
        'WAA_EVENT ["not", "an", "object"]',
        "",
    ]
    assert parse_lines(lines) == []


def test_event_after_a_log_channel_prefix_and_with_trailing_text_is_found():
    payload = {"event": "heartbeat", "ts": 3.0, "worker": "w9", "task_id": None}
    line = "2026-01-18T10:00:00Z stdout F WAA_EVENT " + json.dumps(payload) + "  \r"
    event = parse_event_line(line)
    assert event is not None and event.worker == "w9" and event.task_id is None


def test_stream_parser_reassembles_lines_split_across_chunks():
    full = format_event("task_started", "w1", ts=1.0, task_id="abc", domain="vlc")
    parser = EventStreamParser()
    assert parser.feed_text("noise line\n" + full[:17]) == []
    events = parser.feed_text(full[17:] + "\nmore noise\n")
    assert [e.task_id for e in events] == ["abc"]
    assert parser.ignored_lines == 2


def test_stream_parser_flush_parses_final_line_without_newline():
    parser = EventStreamParser()
    parser.feed_text(format_event("finished", "w1", ts=2.0, completed=3))
    events = parser.flush()
    assert len(events) == 1 and events[0].get("completed") == 3
    assert parser.flush() == []
