"""Loopback receivers for the monitoring tests: an HTTP server that keeps every JSON body
POSTed to it, an SMTP server (aiosmtpd) that keeps every message, and headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)


class WebhookReceiver:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                receiver.bodies.append(json.loads(self.rfile.read(length) or b"null"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/alerts"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class SmtpReceiver:
    def __init__(self) -> None:
        self.messages: list = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope)
        return "250 OK"

    def close(self) -> None:
        self._controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _wait_for_the_browser_install(timeout: float = 900.0) -> None:
    """``make integration`` installs chromium beside the tests: wait for its exit code."""
    status = os.environ.get("BROWSER_INSTALL_STATUS")
    if not status:
        return
    rc, log = Path(status + ".rc"), Path(status + ".log")
    wait_for(rc.exists, timeout, f"the chromium install ({log})")
    if rc.read_text().strip() != "0":
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"make browser failed ({rc.read_text().strip()}):\n{tail}")


def chromium():
    """Headless Debian Chromium through Selenium, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    _wait_for_the_browser_install()
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("chromium and chromium-driver are missing: `make test` installs them (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    options.add_argument(f"--user-data-dir={profile}")
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    session.set_page_load_timeout(30)
    return session, profile


CANVAS_INK = """
const c = document.getElementById(arguments[0]);
if (!c || !c.width || !c.height) return 0;
const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let ink = 0;
for (let i = 3; i < data.length; i += 4) if (data[i] > 0) ink++;
return ink;
"""
