# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live dashboard: a loopback HTTP server (standard library) for the page, its assets and
the run's status file, on a thread of its own for the length of the run."""

from __future__ import annotations

import contextlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ASSETS = Path(__file__).with_name("assets")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".md": "text/plain"}


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, status_file: Path, **kwargs):
        self._status_file = status_file
        super().__init__(*args, directory=str(ASSETS), **kwargs)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send((ASSETS / "dashboard.html").read_bytes(), "text/html; charset=utf-8")
        elif path == "/status.json":
            try:
                body = self._status_file.read_bytes()
            except FileNotFoundError:
                body = b'{"status": "starting"}'
            self._send(body, "application/json")
        elif path.startswith("/assets/") and ".." not in path:
            target = ASSETS / path[len("/assets/") :]
            if target.is_file():
                self._send(
                    target.read_bytes(), _TYPES.get(target.suffix, "application/octet-stream")
                )
            else:
                self.send_error(404)
        else:
            self.send_error(404)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        return


class DashboardServer:
    """Serves the dashboard on ``host:port`` (loopback only; port 0: a free one)."""

    def __init__(self, status_file: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError(f"the dashboard is served on loopback only, not on {host!r}")
        handler = partial(_Handler, status_file=Path(status_file))
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dashboard", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> DashboardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()
