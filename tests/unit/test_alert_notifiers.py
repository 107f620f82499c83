"""Alert notifications received by real servers on loopback: an HTTP receiver for the webhook
formats, aiosmtpd for email; a receiver that fails never stops anything."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.notifiers import (
    Dispatcher,
    EmailChannel,
    WebhookChannel,
    channels_from_settings,
)

EVENT = {
    "rule": "compute_node_unhealthy",
    "priority": "critical",
    "subject": "node-1",
    "message": "node node-1 cpu at 99.0%, above 95% for 300s",
    "condition": "CPU, memory or disk above 95% for 300s",
    "action": "drain the node",
    "raised_at": 0.0,
    "raised_at_iso": "1970-01-01T00:00:00+00:00",
    "cleared_at_iso": None,
    "state": "raised",
    "run_id": "run-1",
}


class Receiver:
    def __init__(self, status: int = 200):
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp():
    box = Mailbox()
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, controller.port
    controller.stop()


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_every_format_and_email_are_received(smtp):
    box, port = smtp
    receivers = {fmt: Receiver() for fmt in ("slack", "teams", "generic")}
    try:
        channels = channels_from_settings(
            {
                "webhooks": [{"url": r.url, "format": f} for f, r in receivers.items()],
                "email": {
                    "host": "127.0.0.1",
                    "port": port,
                    "from": "waa@example.org",
                    "to": ["ops@example.org"],
                },
            }
        )
        dispatcher = Dispatcher(channels)
        dispatcher.dispatch(EVENT)
        dispatcher.close()
        slack = receivers["slack"].bodies
        assert slack[0]["text"].startswith("[critical] compute_node_unhealthy raised: node-1")
        assert slack[0]["attachments"][0]["color"] == "#d00000"
        teams = receivers["teams"].bodies
        assert teams[0]["@type"] == "MessageCard" and teams[0]["themeColor"] == "d00000"
        assert receivers["generic"].bodies == [EVENT]
        [mail] = box.messages
        assert mail.rcpt_tos == ["ops@example.org"]
        text = mail.content.decode()
        assert "Subject: [critical] compute_node_unhealthy raised: node-1" in text
        assert "cpu at 99.0%" in text
        assert dispatcher.sent == 4 and dispatcher.failed == 0
    finally:
        for r in receivers.values():
            r.close()


def test_failed_notifications_are_logged_without_the_url_and_never_raise(caplog):
    refusing = Receiver(status=500)
    try:
        closed_port = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        gone = closed_port.server_address[1]
        closed_port.server_close()
        dispatcher = Dispatcher(
            [
                WebhookChannel(refusing.url),
                WebhookChannel(f"http://127.0.0.1:{gone}/hook/SECRET-TOKEN"),
                EmailChannel("127.0.0.1", "a@b", ("c@d",), port=gone, password="hunter2"),
            ]
        )
        with caplog.at_level(logging.WARNING):
            dispatcher.dispatch(EVENT)
            dispatcher.close()
        assert dispatcher.failed == 3 and dispatcher.sent == 0
        assert "answered HTTP 500" in caplog.text
        assert "SECRET-TOKEN" not in caplog.text and "hunter2" not in caplog.text
        assert "hunter2" not in repr(dispatcher.channels)
    finally:
        refusing.close()


def test_bad_channel_settings_are_refused():
    with pytest.raises(ValueError):
        WebhookChannel("http://127.0.0.1/x", format="irc")
    with pytest.raises(ValueError):
        WebhookChannel("ftp://127.0.0.1/x")
    with pytest.raises(ValueError):
        channels_from_settings({"email": {"host": "h", "from": "a@b", "to": []}})
