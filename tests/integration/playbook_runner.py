"""Run ``ansible-playbook`` the way a user does (cwd = the repository, the project's ansible.cfg,
the default inventory = the emulator) against an emulator of the test's own, and read the outcome
back through the real SDKs."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient

from localazure.identity.principals import DEV_SP_OBJECT_ID
from localazure.metadata.routes import CLOUD_NAME
from localazure.settings import REDIRECTED_SUFFIXES
from localazure.testing import RunningEmulator

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
HELPER_PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
PLAYBOOKS = REPO / "playbooks"
TASK_SET = REPO / "localazure" / "workload" / "data" / "waa_synthetic_test_all.json"

RG, REGISTRY, PULL_IDENTITY = "openadapt-agents", "openadaptevals", "openadaptevals-pull"
WORKSPACE, CLUSTER, RUN_NAME = "openadapt-ml", "waa-cluster", "waa-aml"
IDENTITY_API, WORKSPACE_API = "2023-01-31", "2024-10-01"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"

# Variables of the caller's environment that would point a client at another emulator.
_FOREIGN_ENV_PREFIXES = ("AZURE_", "LOCALAZURE_", "ARM_", "ANSIBLE_")
_FOREIGN_ENV_KEYS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "EVAL_REPORT_DIR")
_TASK = re.compile(r"^TASK \[(?P<name>.+?)\] \*+")
_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def git(repo: Path, *args: str) -> None:
    """``git -C repo ...`` as a CI user, for the repositories the image release tests make."""
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        check=True,
        capture_output=True,
    )


def metadata_and_token_requests(requests: list[dict]) -> tuple[int, int]:
    """Of these logged requests, the cloud metadata reads and the Entra token requests (token
    and OpenID discovery): what every Azure module process repeats."""
    metadata = sum(1 for r in requests if r["path"].startswith("/metadata/endpoints"))
    tokens = sum(
        1
        for r in requests
        if r["path"].endswith(("/oauth2/v2.0/token", "/.well-known/openid-configuration"))
    )
    return metadata, tokens


# -- running ansible-playbook ---------------------------------------------------------------------


# What Playground.leftovers() reads when a run made nothing and wrote nothing.
NOTHING_LEFT = {
    "resource groups": [],
    "resources": [],
    "registries": [],
    "role assignments": [],
    "nodes": [],
    "write requests": [],
}


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr

    def recap(self) -> dict[str, int]:
        """The PLAY RECAP line of localhost: ok, changed, unreachable, failed."""
        found = [m for m in _RECAP.finditer(self.stdout) if m["host"] == "localhost"]
        assert found, f"no PLAY RECAP for localhost in the output:\n{self.tail()}"
        last = found[-1]
        return {key: int(last[key]) for key in ("ok", "changed", "unreachable", "failed")}

    def changed_tasks(self) -> set[str]:
        """The names of the tasks that reported ``changed`` (for any item)."""
        changed, current = set(), None
        for line in self.stdout.splitlines():
            task = _TASK.match(line)
            if task:
                current = task["name"]
            elif current and line.startswith("changed: ["):
                changed.add(current)
        return changed

    def tail(self, lines: int = 60) -> str:
        return "\n".join(
            [f"$ {shlex.join(self.args)} -> {self.returncode} in {self.seconds:.0f}s"]
            + self.stdout.splitlines()[-lines:]
            + ["-- stderr --"]
            + self.stderr.splitlines()[-lines:]
        )


@dataclass
class Playground:
    """The module's emulator and the directories the playbooks write to."""

    emulator: RunningEmulator
    root: Path
    clients: dict[str, object] = field(default_factory=dict)

    @property
    def report_dir(self) -> Path:
        return self.root / "reports"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def client_secret(self) -> str:
        return self.emulator.settings.secret_file.read_text().strip()

    def reset(self) -> None:
        self.emulator.reset()
        self.emulator.admin("DELETE", "faults")
        self.emulator.admin("DELETE", "ml/faults")

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_FOREIGN_ENV_PREFIXES) and key not in _FOREIGN_ENV_KEYS
        }
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            EVAL_REPORT_DIR=str(self.report_dir),
        )
        env.update(extra or {})
        return env

    def play(
        self,
        *args: str,
        playbook: str | Path = "site.yml",
        env: dict[str, str] | None = None,
        timeout: float = 600,
        endpoint_args: bool = True,
        cwd: Path = REPO,
    ) -> Run:
        """``endpoint_args=False`` leaves the emulator's port and state directory to the
        inventory (and so to LOCALAZURE_PORT/LOCALAZURE_STATE_DIR in ``env``)."""
        endpoint = [
            "-e",
            f"localazure_port={self.emulator.settings.port}",
            "-e",
            f"localazure_state_dir={self.emulator.settings.state_dir}",
        ]
        argv = [
            str(VENV_BIN / "ansible-playbook"),
            str(playbook),
            *(endpoint if endpoint_args else []),
            "-e",
            f"eval_state_dir={self.runs_dir}",
            *args,
        ]
        started = time.monotonic()
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Run(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    # -- the real SDKs, pointed at this emulator -----------------------------------------------

    def client(self, cls):
        if cls not in self.clients:
            self.clients[cls] = self.emulator.mgmt_client(cls)
        return self.clients[cls]

    @property
    def resources(self) -> ResourceManagementClient:
        return self.client(ResourceManagementClient)

    @property
    def registries(self) -> ContainerRegistryManagementClient:
        return self.client(ContainerRegistryManagementClient)

    @property
    def auth(self) -> AuthorizationManagementClient:
        return self.client(AuthorizationManagementClient)

    @property
    def ml(self):
        if "ml" not in self.clients:
            self.clients["ml"] = self.emulator.ml_client(RG, WORKSPACE)
        return self.clients["ml"]

    @property
    def subscription_scope(self) -> str:
        return f"/subscriptions/{self.emulator.subscription_id}"

    def registry_id(self) -> str:
        return (
            f"{self.subscription_scope}/resourceGroups/{RG}/providers/"
            f"Microsoft.ContainerRegistry/registries/{REGISTRY}"
        )

    def role_assignments(self, scope: str | None = None) -> list[tuple[str, str, str]]:
        """(scope, role GUID, principal) of every assignment at ``scope`` or, without one,
        anywhere in the subscription."""
        found = (
            self.auth.role_assignments.list_for_scope(scope, filter="atScope()")
            if scope
            else self.auth.role_assignments.list_for_subscription()
        )
        return sorted(
            (a.scope, a.role_definition_id.rsplit("/", 1)[-1].lower(), a.principal_id)
            for a in found
        )

    def requests_since(self, seq: int) -> list[dict]:
        """Every request the emulator logged after ``seq``, its admin API left out."""
        return [
            r for r in self.emulator.requests(since=seq) if not r["path"].startswith("/_localazure")
        ]

    def writes(self) -> list[str]:
        return [
            f"{r['method']} {r['host']}{r['path']} -> {r['status']}"
            for r in self.emulator.requests()
            if r["method"] in ("PUT", "PATCH", "DELETE")
            and not r["path"].startswith("/_localazure")
        ]

    def leftovers(self) -> dict[str, list]:
        """Everything a run may have created, beyond the empty subscription of a reset."""
        owner = (self.subscription_scope, OWNER, DEV_SP_OBJECT_ID)
        return {
            "resource groups": [g.name for g in self.resources.resource_groups.list()],
            "resources": [r.id for r in self.resources.resources.list()],
            "registries": [r.id for r in self.registries.registries.list()],
            "role assignments": [a for a in self.role_assignments() if a != owner],
            "nodes": self.emulator.admin("GET", "ml/nodes")["value"],
            "write requests": self.writes(),
        }

    def jobs(self) -> list:
        return list(self.ml.jobs.list())

    def cluster_nodes(self) -> dict:
        computes = self.emulator.admin("GET", f"ml/nodes?compute={CLUSTER}")["computes"]
        assert len(computes) == 1, computes
        return computes[0]


def _redirecting_resolver(original, endpoint: str):
    """Resolve registry hosts (``*.azurecr.io``) to this emulator, as the client hook does; a
    resolver of its own so that it can be undone (the hook installs one per process)."""
    target = urlsplit(endpoint)

    def getaddrinfo(host, port, *args, **kwargs):
        name = (host.decode() if isinstance(host, bytes) else host or "").lower()
        if name.endswith(REDIRECTED_SUFFIXES):
            if port in (443, "443", "https", None):
                port = target.port
            return original(target.hostname, port, *args, **kwargs)
        return original(host, port, *args, **kwargs)

    return getaddrinfo


def _forget_ml_cloud() -> None:
    # azure-ai-ml caches a discovered cloud by name, whichever emulator it came from.
    from azure.ai.ml import _azure_environments

    _azure_environments._environments.pop(CLOUD_NAME, None)


@contextmanager
def _pointed_at(emulator: RunningEmulator):
    """This process's clients use ``emulator`` until the end; then everything is as before
    (the session emulator of conftest.py keeps working for the modules that follow)."""
    saved_env, saved_resolver = dict(os.environ), socket.getaddrinfo
    os.environ.update(emulator.env)
    socket.getaddrinfo = _redirecting_resolver(saved_resolver, emulator.endpoint)
    _forget_ml_cloud()
    try:
        yield
    finally:
        socket.getaddrinfo = saved_resolver
        os.environ.clear()
        os.environ.update(saved_env)
        _forget_ml_cloud()


@contextmanager
def running_playground(root: Path):
    """A Playground with an emulator of its own under ``root``, stopped at the end."""
    emulator = RunningEmulator(root / "localazure")
    try:
        emulator.start()
        with _pointed_at(emulator):
            yield Playground(emulator, root)
    finally:
        emulator.stop()
