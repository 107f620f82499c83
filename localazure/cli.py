"""``localazure start | stop | status | reset | env | serve``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from localazure.arm.resources import regional_wildcards
from localazure.core.tls import ensure_certificates
from localazure.settings import REDIRECTED_SUFFIXES, REGIONAL_SUFFIXES, Settings

STARTUP_TIMEOUT_S = 30


def _admin(settings: Settings, method: str, path: str, timeout: float = 3.0) -> dict | None:
    if not settings.ca_bundle.exists():
        return None
    context = ssl.create_default_context(cafile=str(settings.ca_bundle))
    request = urllib.request.Request(f"{settings.endpoint}/_localazure/{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError, OSError):
        return None


def _read_pid(settings: Settings) -> int | None:
    try:
        pid = int(settings.pid_file.read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def environment(settings: Settings) -> dict[str, str]:
    """The variables that point the real clients at the emulator."""
    secret = settings.secret_file.read_text().strip() if settings.secret_file.exists() else ""
    endpoint = settings.endpoint
    return {
        "LOCALAZURE_ENDPOINT": endpoint,
        "LOCALAZURE_STATE_DIR": str(settings.state_dir),
        # The client hook resolves these host suffixes to the emulator (registry login servers).
        "LOCALAZURE_DNS": ",".join(REDIRECTED_SUFFIXES),
        "REQUESTS_CA_BUNDLE": str(settings.ca_bundle),
        "SSL_CERT_FILE": str(settings.ca_bundle),
        # azure.azcollection
        "AZURE_CLOUD_ENVIRONMENT": endpoint,
        "AZURE_DISABLE_INSTANCE_DISCOVERY": "true",
        "AZURE_SUBSCRIPTION_ID": settings.subscription_id,
        "AZURE_CLIENT_ID": settings.client_id,
        "AZURE_SECRET": secret,
        "AZURE_TENANT": settings.tenant_id,
        # azure-identity (EnvironmentCredential, authority)
        "AZURE_TENANT_ID": settings.tenant_id,
        "AZURE_CLIENT_SECRET": secret,
        "AZURE_AUTHORITY_HOST": endpoint,
        # azure-ai-ml
        "ARM_CLOUD_METADATA_URL": f"{endpoint}/metadata/endpoints?api-version=2019-05-01",
    }


def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    if _admin(settings, "GET", "health"):
        print(f"localazure is already running at {settings.endpoint}")
        return 0
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_certificates(settings.tls_dir, settings.host, regional_wildcards(REGIONAL_SUFFIXES))
    log = open(settings.log_file, "ab")  # noqa: SIM115 - handed to the child process
    env = {
        **os.environ,
        "LOCALAZURE_STATE_DIR": str(settings.state_dir),
        "LOCALAZURE_PORT": str(settings.port),
        "LOCALAZURE_HOST": settings.host,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "localazure", "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    settings.pid_file.write_text(str(child.pid))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            last = settings.log_file.read_text(errors="replace").strip().splitlines()[-1:]
            print(
                f"localazure exited during start-up (code {child.returncode}): "
                f"{last[0] if last else 'no output'} (log: {settings.log_file})",
                file=sys.stderr,
            )
            return 1
        if _admin(settings, "GET", "health", timeout=1.0):
            print(f"localazure started at {settings.endpoint} (pid {child.pid})")
            return 0
        time.sleep(0.2)
    print(
        f"localazure did not answer within {STARTUP_TIMEOUT_S}s; see {settings.log_file}",
        file=sys.stderr,
    )
    return 1


def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    pid = _read_pid(settings)
    if pid is None:
        print("localazure is not running")
        return 0
    os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        if _read_pid(settings) is None:
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    settings.pid_file.unlink(missing_ok=True)
    print("localazure stopped")
    return 0


def _unverified_health(settings: Settings) -> dict | None:
    """Health of whatever localazure answers on the port, its certificate unchecked: only to
    tell "another state directory's emulator" from "not running"."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"{settings.endpoint}/_localazure/health", timeout=3.0, context=context
        ) as response:
            return json.loads(response.read() or b"{}")
    except (
        urllib.error.URLError,
        ConnectionError,
        TimeoutError,
        ssl.SSLError,
        OSError,
        ValueError,
    ):
        return None


def _port_answers(settings: Settings) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((settings.host, settings.port)) == 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    health = _admin(settings, "GET", "health")
    if health is not None:
        print(json.dumps(health, indent=2))
        return 0
    if not _port_answers(settings):
        print(f"localazure is not running at {settings.endpoint}")
        return 3
    if _unverified_health(settings) is not None:
        print(
            f"a localazure answers at {settings.endpoint}, but not with the certificate of "
            f"{settings.state_dir} (another state directory's emulator, or this one's TLS files "
            "were replaced): point LOCALAZURE_STATE_DIR at its state directory, or stop it",
            file=sys.stderr,
        )
    else:
        print(
            f"port {settings.port} on {settings.host} is taken by another server, not localazure: "
            "choose another LOCALAZURE_PORT",
            file=sys.stderr,
        )
    return 1


def cmd_reset(settings: Settings, args: argparse.Namespace) -> int:
    if _admin(settings, "POST", "reset"):
        print("localazure state reset")
        return 0
    for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
        (settings.state_dir / name).unlink(missing_ok=True)
    print("localazure is not running; its state was removed")
    return 0


def cmd_env(settings: Settings, args: argparse.Namespace) -> int:
    missing = [p for p in (settings.secret_file, settings.ca_bundle) if not p.exists()]
    if missing:
        print(
            f"no localazure state in {settings.state_dir} (missing "
            f"{', '.join(str(p) for p in missing)}): run `localazure start` with this "
            "LOCALAZURE_STATE_DIR first",
            file=sys.stderr,
        )
        return 1
    env = environment(settings)
    if args.format == "json":
        print(json.dumps(env, indent=2))
    else:
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from localazure.server import serve

    serve(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localazure", description="Azure emulator over HTTPS.")
    parser.add_argument("--port", type=int, help="port (default $LOCALAZURE_PORT or 44300)")
    parser.add_argument(
        "--state-dir", type=Path, help="state directory (default ./.state/localazure)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_text in (
        ("start", cmd_start, "start in the background and wait until it answers"),
        ("stop", cmd_stop, "stop the background server"),
        ("status", cmd_status, "print health; exit 3 when not running"),
        ("reset", cmd_reset, "drop all emulated state"),
        ("env", cmd_env, "print the shell exports that point clients at the emulator"),
        ("serve", cmd_serve, "run in the foreground"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(fn=fn)
        if name == "env":
            p.add_argument("--format", choices=("sh", "json"), default="sh")
    args = parser.parse_args(argv)
    if args.port:
        os.environ["LOCALAZURE_PORT"] = str(args.port)
    if args.state_dir:
        os.environ["LOCALAZURE_STATE_DIR"] = str(args.state_dir.resolve())
    return args.fn(Settings.from_env(), args)
