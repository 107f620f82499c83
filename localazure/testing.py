"""Run a real emulator for tests and benchmarks: its own port and state directory, the real
HTTPS server in a child process, and the environment that points the real clients at it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from localazure import client_hook
from localazure.cli import environment
from localazure.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningEmulator:
    # Every emulator of this process, so that a test harness can tell an emulator that a
    # fixture owns (and a test restarted) from a process the test left behind.
    _instances: weakref.WeakSet[RunningEmulator] = weakref.WeakSet()

    def __init__(self, state_dir: Path, port: int | None = None):
        self.settings = Settings(port=port or free_port(), state_dir=state_dir)
        self.process: subprocess.Popen | None = None
        RunningEmulator._instances.add(self)

    @classmethod
    def instances(cls) -> list[RunningEmulator]:
        return list(cls._instances)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RunningEmulator:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LOCALAZURE_STATE_DIR": str(self.settings.state_dir),
            "LOCALAZURE_PORT": str(self.settings.port),
        }
        log = open(self.settings.log_file, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localazure", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulator exited: {self.settings.log_file.read_text()[-2000:]}")
            try:
                self.admin("GET", "health")
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("emulator did not start in time")

    def stop(self) -> None:
        """Stop the server and everything it started (simulated containers and their workers)."""
        if self.process is None:
            return
        import psutil  # test dependency; the simulated containers run in sessions of their own

        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- clients ------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def subscription_id(self) -> str:
        return self.settings.subscription_id

    @property
    def env(self) -> dict[str, str]:
        return environment(self.settings)

    def activate(self) -> None:
        """Point this process's clients at the emulator (env and the client hook)."""
        os.environ.update(self.env)
        client_hook.install()

    def credential(self, secret: str | None = None):
        from azure.identity import ClientSecretCredential

        env = self.env
        return ClientSecretCredential(
            env["AZURE_TENANT_ID"],
            env["AZURE_CLIENT_ID"],
            secret if secret is not None else env["AZURE_CLIENT_SECRET"],
            authority=self.endpoint,
            disable_instance_discovery=True,
        )

    def mgmt_client(self, client_cls, credential=None, **kwargs):
        """An azure-mgmt-* client pointed at the emulator, as azcollection builds them."""
        return client_cls(
            credential or self.credential(),
            self.subscription_id,
            base_url=self.endpoint,
            credential_scopes=[self.endpoint + "/.default"],
            **kwargs,
        )

    def ml_client(self, resource_group: str, workspace: str, credential=None):
        """A real ``azure.ai.ml.MLClient`` for a workspace of the emulator.

        azure-ai-ml finds a custom cloud through ``ARM_CLOUD_METADATA_URL`` (its name,
        ``LocalAzure``, comes from the emulator's cloud metadata), so this sets that variable
        in this process, as ``activate`` does."""
        from azure.ai.ml import MLClient

        from localazure.metadata.routes import CLOUD_NAME

        os.environ["ARM_CLOUD_METADATA_URL"] = self.env["ARM_CLOUD_METADATA_URL"]
        return MLClient(
            credential or self.credential(),
            self.subscription_id,
            resource_group,
            workspace,
            cloud=CLOUD_NAME,
            show_progress=False,
            enable_telemetry=False,
        )

    # -- admin API ----------------------------------------------------------------------------

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        context = ssl.create_default_context(cafile=str(self.settings.ca_bundle))
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.endpoint}/_localazure/{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            raw = response.read()
            return json.loads(raw) if raw else None

    def reset(self) -> None:
        self.admin("POST", "reset")

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        return self.admin("POST", "faults", spec)

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Every request logged after ``since``: the admin API answers a page at a time."""
        found: list[dict[str, Any]] = []
        while page := self.admin("GET", f"requests?since={since}")["value"]:
            found += page
            since = page[-1]["seq"]
        return found

    def request_seq(self) -> int:
        """The sequence number of the last logged request (0: none)."""
        logged = self.requests()
        return logged[-1]["seq"] if logged else 0
