# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where alerts are sent: webhooks (Slack-compatible JSON, a Teams MessageCard or the alert as
generic JSON) and email over SMTP. Each message is sent from one background thread so that a
slow receiver never holds up the run loop, and a failed send is logged, never raised: a
notification that cannot be delivered does not stop the evaluation."""

from __future__ import annotations

import logging
import smtplib
import ssl
import traceback
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

try:
    import requests

    REQUESTS_IMPORT_ERROR = None
except ImportError:
    # reported when a webhook channel is configured, with missing_required_lib("requests")
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

from ansible.module_utils.basic import missing_required_lib

log = logging.getLogger(__name__)

WEBHOOK_FORMATS = ("slack", "teams", "generic")
_COLOURS = {"critical": "#d00000", "warning": "#f2a900"}
_TIMEOUT_S = 10.0


class NotificationError(Exception):
    """A message the receiver did not take (no credential in the text)."""


class Channel(Protocol):
    name: str

    def send(self, event: Mapping[str, Any]) -> None: ...


def headline(event: Mapping[str, Any]) -> str:
    verb = "raised" if event["state"] == "raised" else "cleared"
    return f"[{event['priority']}] {event['rule']} {verb}: {event['subject']}"


def _facts(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = [
        ("run", str(event.get("run_id") or "")),
        ("condition", event["condition"]),
        ("action", event["action"]),
        ("raised at", event["raised_at_iso"]),
    ]
    if event.get("cleared_at_iso"):
        facts.append(("cleared at", event["cleared_at_iso"]))
    return facts


def webhook_body(event: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    if fmt == "slack":
        return {
            "text": headline(event),
            "attachments": [
                {
                    "color": _COLOURS.get(event["priority"], "#808080"),
                    "title": headline(event),
                    "text": event["message"],
                    "fields": [{"title": k, "value": v, "short": False} for k, v in _facts(event)],
                }
            ],
        }
    if fmt == "teams":
        return {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "themeColor": _COLOURS.get(event["priority"], "#808080").lstrip("#"),
            "summary": headline(event),
            "title": headline(event),
            "text": event["message"],
            "sections": [{"facts": [{"name": k, "value": v} for k, v in _facts(event)]}],
        }
    if fmt == "generic":
        return dict(event)
    raise ValueError(f"webhook format must be one of {list(WEBHOOK_FORMATS)}, not {fmt!r}")


@dataclass(frozen=True)
class WebhookChannel:
    url: str
    format: str = "slack"
    name: str = "webhook"

    def __post_init__(self) -> None:
        if self.format not in WEBHOOK_FORMATS:
            raise ValueError(f"webhook format must be one of {list(WEBHOOK_FORMATS)}")
        if not self.url.startswith(("https://", "http://")):
            raise ValueError("a webhook url must start with https:// or http://")
        if REQUESTS_IMPORT_ERROR:
            raise ValueError(missing_required_lib("requests"))

    def send(self, event: Mapping[str, Any]) -> None:
        # A webhook URL is a credential (Slack's and Teams' carry their token): errors name the
        # receiver's host only.
        host = requests.utils.urlparse(self.url).hostname
        try:
            response = requests.post(
                self.url, json=webhook_body(event, self.format), timeout=_TIMEOUT_S
            )
        except requests.RequestException as exc:
            raise NotificationError(f"webhook at {host}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise NotificationError(f"webhook at {host} answered HTTP {response.status_code}")


@dataclass(frozen=True)
class EmailChannel:
    host: str
    sender: str
    recipients: tuple[str, ...]
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    name: str = "email"

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("email alerts need at least one recipient")

    def message(self, event: Mapping[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = headline(event)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        body = [event["message"], ""] + [f"{k}: {v}" for k, v in _facts(event)]
        msg.set_content("\n".join(body) + "\n")
        return msg

    def send(self, event: Mapping[str, Any]) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=_TIMEOUT_S) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(self.message(event))

    def __repr__(self) -> str:
        return f"EmailChannel(host={self.host!r}, port={self.port}, to={list(self.recipients)})"


def channels_from_settings(settings: Mapping[str, Any]) -> list[Channel]:
    """The channels of ``eval_alert_notifications`` (see roles/eval/defaults/main.yml)."""
    found: list[Channel] = []
    for hook in settings.get("webhooks") or []:
        found.append(WebhookChannel(url=hook["url"], format=hook.get("format", "slack")))
    email = settings.get("email")
    if email:
        recipients = email.get("to") or []
        if isinstance(recipients, str):
            recipients = [recipients]
        found.append(
            EmailChannel(
                host=email["host"],
                port=int(email.get("port", 25)),
                sender=email["from"],
                recipients=tuple(recipients),
                starttls=bool(email.get("starttls", False)),
                username=email.get("username"),
                password=email.get("password"),
            )
        )
    return found


class Dispatcher:
    """Sends every alert event to every channel, in order, from one background thread."""

    def __init__(self, channels: list[Channel]) -> None:
        self.channels = list(channels)
        self.sent = 0
        self.failed = 0
        self._pool = (
            futures.ThreadPoolExecutor(1, thread_name_prefix="alert-notify") if channels else None
        )
        self._pending: list[futures.Future] = []

    def dispatch(self, event: Mapping[str, Any]) -> None:
        if self._pool is None:
            return
        for channel in self.channels:
            self._pending.append(self._pool.submit(self._send, channel, dict(event)))
        self._pending = [f for f in self._pending if not f.done()]

    def _send(self, channel: Channel, event: dict[str, Any]) -> None:
        try:
            channel.send(event)
            self.sent += 1
        except Exception as exc:  # a notification never stops the run
            self.failed += 1
            log.warning("alert notification by %s failed: %s", channel.name, _short(exc))

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (at most ``timeout`` seconds), then stop."""
        if self._pool is None:
            return
        futures.wait(self._pending, timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
