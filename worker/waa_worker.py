"""The worker every tier runs: WAA tasks one at a time, one event line per step on stdout.

    python waa_worker.py --worker-id W --task-ids id1,id2 [--test-all-meta PATH]
                         [--result-dir DIR] [--heartbeat-interval SECONDS]

For each task it writes a one-task meta file in WAA's test_all.json shape, runs the WAA client
(``WAA_CLIENT_CMD``, default ``python /client/run.py``) with ``--test_all_meta_path`` and
``--result_dir``, passes the client's output through to stderr, and reads the score WAA writes to
``<result_dir>/**/<task_id>/result.txt``. With ``WAA_CLIENT_BATCH=1`` it runs all its tasks
through one client process instead (WAA's own task loop: one meta file with every task), takes
each task as done when its result.txt appears, and starts a new client for the tasks left if one
exits early. Events (stdout, one line each, flushed at once):

    WAA_EVENT {"event": "started", "ts": 1700000000.0, "worker": "W", "task_ids": [...]}

with events started, image_ready, vm_starting, vm_ready, task_started, heartbeat, task_result
and finished. On SIGTERM it prints nothing more, kills the client and exits with 143.

With ``WAA_TASK_FEED`` (a folder, or the https URL of a blob prefix read with the node's managed
identity) the worker does not stop after its tasks: it runs those of the feed's entries 1, 2, ...
(``{"task_ids": [...]}``, written by the controller while the last task runs) on the same VM,
printing ``tasks_added`` for each, ``awaiting`` when an entry is not there yet, and
``feed_error`` when the feed cannot be read; an empty entry, or none within
``WAA_TASK_FEED_WAIT`` seconds (60), ends the job. A job restart (a container start and, on
WAA, a Windows VM boot) is paid once per worker instead of once per chunk of tasks.

Before the first task it does what WAA's own Azure entry does: it checks the golden image (the
prepared Windows VM disk, ``--golden-image-path``, default ``/storage``) and prints
``image_ready``; starts the VM (``WAA_VM_START_CMD``, default ``/start_vm.sh``) and prints
``vm_starting``; then sends ``GET`` to WAA's probe (``WAA_PROBE_URL``, default
``http://20.20.20.21:5000/probe``) every ``WAA_PROBE_INTERVAL`` seconds (5, as WAA's loop),
printing WAA's "Waiting for a response from the windows server" line to stderr each time, until
it answers: ``vm_ready``. Heartbeats go on through the boot. Boot output that explains a failure
(dockur's "ISO file not found or is empty", no /dev/kvm, KVM permission denied, no space left)
ends the boot at once with a ``failed`` event that carries the code, the fix and the output's
tail, exit code 4. A VM that stops answering while tasks run is restarted once (``vm_lost``,
then the boot phases again) and the task in flight runs again; a second loss, or a restart that
does not answer within ``WAA_VM_BOOT_TIMEOUT`` seconds, is ``failed`` ``VmUnresponsive``.
``WAA_VM_BOOT=0`` skips the boot (an image whose entry point already started the VM).

``--warm-up`` runs no task: it checks the golden image (``image_ready``), prints ``warm_up`` with
the node it ran on (``AZ_BATCH_NODE_ID``, else the host name) and ``finished``: the image was
pulled (the job runs in it) and the golden image is reachable on that node.

Secrets (the agent's API keys) are not in the job definition: ``WAA_SECRET_NAMES`` maps
environment variable names to secret names in the Key Vault ``WAA_SECRETS_VAULT_URL``. Before the
first task the worker reads each secret with the managed identity of its node (App Service
protocol ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``, Azure ML's ``MSI_ENDPOINT``/``MSI_SECRET``, or
IMDS) through Key Vault's challenge, and gives the values to the WAA client's environment only:
never to its own environment, output or events. A secret that is missing or may not be read is a
permanent failure: a ``failed`` event naming the secret and the role to grant, exit code 3.

Stdlib only and Python 3.8+ compatible: this file is shipped to workers on its own. The controller
side of the protocol is plugins/module_utils/worker_events.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

EVENT_PREFIX = "WAA_EVENT "
DEFAULT_CLIENT_CMD = "python /client/run.py"
DEFAULT_TEST_ALL_META = "/client/evaluation_examples_windows/test_all.json"
DEFAULT_RESULT_DIR = "./results"
RESULT_POLL_S = 0.05
OUTPUT_TAIL_LINES = 20
MAX_TAIL_LINE_CHARS = 300
SECRET_NAMES_ENV = "WAA_SECRET_NAMES"
SECRETS_VAULT_ENV = "WAA_SECRETS_VAULT_URL"
IDENTITY_CLIENT_ID_ENV = "WAA_IDENTITY_CLIENT_ID"
TASK_FEED_ENV = "WAA_TASK_FEED"
TASK_FEED_WAIT_ENV = "WAA_TASK_FEED_WAIT"
DEFAULT_TASK_FEED_WAIT_S = 60.0
TASK_FEED_POLL_S = 0.25
STORAGE_RESOURCE = "https://storage.azure.com/"
STORAGE_API_VERSION = "2021-08-06"
# A managed identity's token is fetched again after this long (they last an hour or more).
TOKEN_REUSE_S = 600.0
KEY_VAULT_API_VERSION = "7.4"
SECRETS_ROLE = "Key Vault Secrets User"
SECRET_FAILURE_EXIT = 3
IMDS_ENDPOINT = "http://169.254.169.254"
HTTP_TIMEOUT_S = 30
TRANSIENT_ATTEMPTS = 5
DEFAULT_GOLDEN_IMAGE_PATH = "/storage"
DEFAULT_VM_START_CMD = "/start_vm.sh"
DEFAULT_PROBE_URL = "http://20.20.20.21:5000/probe"
DEFAULT_PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 5.0
DISK_SECTOR = 512
BOOT_FAILURE_EXIT = 4
WAITING_FOR_VM = "Waiting for a response from the windows server. This might take a while..."
UPLOAD_STEP = (
    "upload the prepared image with playbooks/waa_image.yml (role waa_image, "
    "eval_golden_image_source=<the folder WAA's --prepare-image filled>) and mount it at the "
    "worker's --golden-image-path (the tier does this from eval_golden_image)"
)
NESTED_VIRTUALIZATION_FIX = (
    "use a VM size with nested virtualization (Standard_D4s_v5, Dv3/Dsv3 series) and security "
    "type Standard, not TrustedLaunch"
)
# Boot output that explains why the VM cannot start: (code, what is wrong, what to do).
BOOT_FAILURES = (
    (
        "ISO file not found or is empty",
        "GoldenImageMissing",
        "the golden image is missing or empty at the path the VM boots from",
        UPLOAD_STEP,
    ),
    (
        "failed to initialize kvm",
        "NestedVirtualizationUnavailable",
        "KVM is not available on this node (/dev/kvm missing)",
        NESTED_VIRTUALIZATION_FIX,
    ),
    (
        "KVM acceleration not available",
        "NestedVirtualizationUnavailable",
        "KVM is not available on this node (/dev/kvm missing)",
        NESTED_VIRTUALIZATION_FIX,
    ),
    (
        "/dev/kvm: Permission denied",
        "NestedVirtualizationUnavailable",
        "the container may not use /dev/kvm (permission denied)",
        "run the container with --device=/dev/kvm (or "
        "privileged) on a node with nested virtualization; " + NESTED_VIRTUALIZATION_FIX,
    ),
    (
        "No space left on device",
        "OutOfDisk",
        "the node's disk is full",
        "give the nodes a "
        "larger disk for the 30 GB image (a size with a bigger temporary disk, or a data disk)",
    ),
)


class EventWriter:
    """Writes event lines straight to the stdout file descriptor.

    One os.write per line keeps lines whole (pipes write up to PIPE_BUF atomically) and leaves
    nothing buffered that a signal handler could half-flush.
    """

    def __init__(self, worker_id: str, on_broken_pipe: Callable[[], None], fd: int = 1) -> None:
        self.worker_id = worker_id
        self.fd = fd
        self.closed = False
        self._lock = threading.Lock()
        self._on_broken_pipe = on_broken_pipe

    def emit(self, event: str, **fields: object) -> None:
        payload = {"event": event, "ts": time.time(), "worker": self.worker_id}
        payload.update(fields)
        data = (EVENT_PREFIX + json.dumps(payload, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self.closed:
                return
            try:
                while data:
                    written = os.write(self.fd, data)
                    data = data[written:]
            except (BrokenPipeError, OSError):
                # The reader (SSH channel, controller) is gone: nobody can use our results.
                self._on_broken_pipe()

    def close(self) -> None:
        self.closed = True


class ClientRun:
    """One WAA client subprocess whose output is forwarded to our stderr."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.tail: collections.deque = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self.last_output_at = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            universal_newlines=True,
            errors="replace",
            bufsize=1,
        )
        self._pump = threading.Thread(target=self._forward_output, daemon=True)
        self._pump.start()

    def _forward_output(self) -> None:
        for line in self.process.stdout:
            self.last_output_at = time.monotonic()
            self.tail.append(line.rstrip("\r\n")[:MAX_TAIL_LINE_CHARS])
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_output_at

    def wait(self) -> int:
        returncode = self.process.wait()
        self._pump.join(timeout=5)
        return returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()


class BootError(Exception):
    """The VM cannot be used; ``code`` is the failure class the controller uses."""

    def __init__(self, code: str, message: str, output: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.output = output or []


def golden_image_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete golden image, or None: WAA's VM boots ``data.img``, which
    must be there, not empty and a whole number of disk sectors (a cut-off upload is not)."""
    disk = path / "data.img"
    if not path.is_dir():
        return f"{path} does not exist"
    if not disk.is_file():
        return f"{disk} does not exist"
    size = disk.stat().st_size
    if size == 0:
        return f"{disk} is empty"
    if size % DISK_SECTOR:
        return f"{disk} is truncated ({size} bytes, not a whole number of sectors)"
    return None


def probe_answers(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does WAA's server answer its probe with 200? (Never through a proxy: it is local.)"""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class VmBoot:
    """WAA's VM inside the container: the golden image check, the VM start command and the
    probe loop of WAA's Azure entry, and at most ``max_restarts`` restarts."""

    def __init__(
        self,
        events: EventWriter,
        image_path: str,
        start_cmd: str,
        probe_url: str,
        probe_interval: float,
        boot_timeout: float,
        storage_link: str = "",
        max_restarts: int = 1,
    ) -> None:
        self.events = events
        self.image_path = Path(image_path)
        self.start_argv = shlex.split(start_cmd)
        self.probe_url = probe_url
        self.probe_interval = probe_interval
        self.boot_timeout = boot_timeout
        self.storage_link = storage_link
        self.restarts_left = max_restarts
        self.process: ClientRun | None = None
        self.phase = "image"
        self.attempt = 0

    def check_image(self) -> None:
        problem = golden_image_problem(self.image_path)
        if problem:
            raise BootError(
                "GoldenImageMissing",
                f"the golden image is not usable: {problem}; {UPLOAD_STEP}",
            )
        files = sorted(p.name for p in self.image_path.iterdir() if p.is_file())
        size = sum((self.image_path / name).stat().st_size for name in files)
        self._link_storage()
        self.events.emit("image_ready", path=str(self.image_path), files=files, bytes=size)

    def _link_storage(self) -> None:
        """WAA's VM start reads ``/storage``; a tier that mounts the image elsewhere gets a
        link there when nothing is at that path yet."""
        link = Path(self.storage_link) if self.storage_link else None
        if link is None or link == self.image_path or os.path.lexists(link):
            return
        with contextlib.suppress(OSError):
            link.symlink_to(self.image_path, target_is_directory=True)

    def start(self) -> None:
        """Start the VM and wait for the probe (WAA's loop); raises BootError."""
        self.attempt += 1
        self.phase = "vm_starting"
        env = {**os.environ, "WAA_GOLDEN_IMAGE_PATH": str(self.image_path)}
        self.events.emit(
            "vm_starting", attempt=self.attempt, command=self.start_argv, probe_url=self.probe_url
        )
        started = time.monotonic()
        try:
            self.process = ClientRun(self.start_argv, env)
        except OSError as exc:
            raise BootError(
                "VmBootFailed",
                f"could not start the VM with {self.start_argv[0]!r}: {exc}; set WAA_VM_START_CMD "
                "to the image's VM start script",
            ) from None
        while True:
            explained = self._explained_failure()
            if explained is not None:
                raise explained
            if probe_answers(self.probe_url):
                break
            code = self.process.process.poll()
            if code is not None:
                self.process.wait()
                explained = self._explained_failure()
                raise explained or BootError(
                    "VmBootFailed",
                    f"the VM start command exited with code {code} before WAA's server answered",
                    list(self.process.tail),
                )
            waited = time.monotonic() - started
            if self.boot_timeout and waited > self.boot_timeout:
                raise BootError(
                    "VmBootTimeout",
                    f"WAA's server did not answer {self.probe_url} within "
                    f"{self.boot_timeout:.0f}s of the VM's start (boot {self.attempt})",
                    list(self.process.tail),
                )
            _log(WAITING_FOR_VM)
            time.sleep(self.probe_interval)
        self.phase = "tasks"
        self.events.emit(
            "vm_ready", attempt=self.attempt, boot_s=round(time.monotonic() - started, 3)
        )

    def _explained_failure(self) -> BootError | None:
        tail = list(self.process.tail) if self.process else []
        for pattern, code, what, fix in BOOT_FAILURES:
            if any(pattern.lower() in line.lower() for line in tail):
                return BootError(code, f"{what}: {fix}", tail)
        return None

    def answering(self) -> bool:
        return probe_answers(self.probe_url)

    def restart(self, task_id: str | None) -> None:
        """The VM stopped answering: start it again once, or give the job up."""
        if self.restarts_left <= 0:
            raise BootError(
                "VmUnresponsive",
                f"WAA's server stopped answering {self.probe_url} again after a restart",
            )
        self.restarts_left -= 1
        self.events.emit("vm_lost", task_id=task_id, probe_url=self.probe_url)
        self.stop()
        try:
            self.start()
        except BootError as err:
            raise BootError(
                "VmUnresponsive",
                f"WAA's server stopped answering and the VM's restart failed: {err.message}",
                err.output,
            ) from None

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _log(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class SecretError(Exception):
    """A secret the worker cannot have; ``code`` is the failure class the controller uses."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _HttpAnswer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> dict:
        try:
            data = json.loads(self.body.decode("utf-8"))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def error_code(self) -> str:
        error = self.json().get("error")
        if isinstance(error, dict):
            return str(error.get("code") or "")
        return str(error or "")


def _http_get(url: str, headers: dict[str, str]) -> _HttpAnswer:
    """One GET; transient failures (connection errors, 429, 5xx) are retried with backoff."""
    delay = 1.0
    reason = "no answer"
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return _HttpAnswer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as err:
            answer = _HttpAnswer(err.code, dict(err.headers or {}), err.read())
            if err.code != 429 and err.code < 500:
                return answer
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            reason = str(getattr(err, "reason", err))
        if attempt == TRANSIENT_ATTEMPTS:
            host = urllib.parse.urlsplit(url).netloc
            raise SecretError("ServerError", f"{host} did not answer ({reason})")
        time.sleep(delay)
        delay = min(delay * 2, 16.0)
    raise AssertionError("unreachable")


class ManagedIdentity:
    """Tokens of the node's managed identity, by the protocol the container sees."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.client_id = environ.get(IDENTITY_CLIENT_ID_ENV) or environ.get(
            "DEFAULT_IDENTITY_CLIENT_ID"
        )
        if environ.get("IDENTITY_ENDPOINT") and environ.get("IDENTITY_HEADER"):
            self.protocol = "App Service"
            self.endpoint = environ["IDENTITY_ENDPOINT"]
            self.headers = {"X-IDENTITY-HEADER": environ["IDENTITY_HEADER"]}
            self.params = {"api-version": "2019-08-01"}
            self.client_param = "client_id"
        elif environ.get("MSI_ENDPOINT") and environ.get("MSI_SECRET"):
            self.protocol = "Azure ML"
            self.endpoint = environ["MSI_ENDPOINT"]
            self.headers = {"secret": environ["MSI_SECRET"]}
            self.params = {"api-version": "2017-09-01"}
            self.client_param = "clientid"
        else:
            self.protocol = "IMDS"
            host = environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or IMDS_ENDPOINT
            self.endpoint = host.rstrip("/") + "/metadata/identity/oauth2/token"
            self.headers = {"Metadata": "true"}
            self.params = {"api-version": "2018-02-01"}
            self.client_param = "client_id"

    def token(self, resource: str) -> str:
        params = dict(self.params, resource=resource)
        if self.client_id:
            params[self.client_param] = self.client_id
        answer = _http_get(f"{self.endpoint}?{urllib.parse.urlencode(params)}", self.headers)
        token = answer.json().get("access_token") if answer.status == 200 else None
        if not token:
            which = f" (client id {self.client_id})" if self.client_id else ""
            raise SecretError(
                "AuthenticationFailed",
                f"the node's managed identity{which} gave no token for {resource} through the "
                f"{self.protocol} endpoint (HTTP {answer.status} {answer.error_code()}): give "
                "the compute a managed identity",
            )
        return str(token)


def _challenge_resource(header: str, vault_host: str) -> str:
    """The resource a Key Vault challenge names, if it belongs to the vault's domain."""
    params = {}
    for part in header.partition(" ")[2].split(","):
        key, _sep, value = part.strip().partition("=")
        params[key.lower()] = value.strip().strip('"')
    resource = params.get("resource") or params.get("scope", "")
    if resource.endswith("/.default"):  # str.removesuffix needs Python 3.9
        resource = resource[: -len("/.default")]
    domain = urllib.parse.urlsplit(resource).netloc.lower()
    if not domain or not vault_host.lower().endswith("." + domain):
        raise SecretError(
            "AuthenticationFailed",
            f"the challenge of {vault_host} names resource {resource!r}, outside the vault's "
            "domain; refusing to send it a token",
        )
    return resource


class VaultReader:
    """Reads secrets from one vault: the first request is answered by Key Vault's challenge,
    which names the audience of the token to send."""

    def __init__(self, vault_url: str, identity: ManagedIdentity) -> None:
        parts = urllib.parse.urlsplit(vault_url)
        if parts.scheme != "https" or not parts.netloc:
            raise SecretError(
                "InvalidConfiguration",
                f"{SECRETS_VAULT_ENV} must be an https URL, not {vault_url!r}",
            )
        self.vault = f"https://{parts.netloc}"
        self.identity = identity
        self._auth: dict[str, str] = {}

    def read(self, name: str) -> str:
        url = f"{self.vault}/secrets/{urllib.parse.quote(name)}?api-version={KEY_VAULT_API_VERSION}"
        answer = _http_get(url, self._auth)
        if answer.status == 401 and "www-authenticate" in {k.lower() for k in answer.headers}:
            header = next(v for k, v in answer.headers.items() if k.lower() == "www-authenticate")
            resource = _challenge_resource(header, urllib.parse.urlsplit(self.vault).netloc)
            self._auth = {"Authorization": "Bearer " + self.identity.token(resource)}
            answer = _http_get(url, self._auth)
        if answer.status == 200 and isinstance(answer.json().get("value"), str):
            return answer.json()["value"]
        code = answer.error_code()
        if answer.status == 403:
            raise SecretError(
                "AuthorizationFailed",
                f"the worker's managed identity may not read secret '{name}' in {self.vault} "
                f"({code}): grant it the '{SECRETS_ROLE}' role on the vault (RBAC vaults) or a "
                "secrets 'get' access policy",
            )
        if answer.status == 404:
            raise SecretError(
                "InvalidConfiguration",
                f"secret '{name}' is not in {self.vault} ({code or 'not found'}): store it there "
                "(the eval role does, from eval_secret_environment_variables)",
            )
        if answer.status == 401:
            raise SecretError(
                "AuthenticationFailed",
                f"{self.vault} refused the managed identity's token for secret '{name}' ({code})",
            )
        raise SecretError(
            "InvalidConfiguration",
            f"reading secret '{name}' from {self.vault} failed with HTTP {answer.status} ({code})",
        )


def read_secret_environment(environ: dict[str, str]) -> dict[str, str]:
    """The WAA client's secret environment: ``WAA_SECRET_NAMES`` (a JSON object, environment
    variable -> secret name) read from ``WAA_SECRETS_VAULT_URL``."""
    raw = environ.get(SECRET_NAMES_ENV, "").strip()
    if not raw:
        return {}
    try:
        names = json.loads(raw)
    except ValueError:
        names = None
    if not isinstance(names, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in names.items()
    ):
        raise SecretError(
            "InvalidConfiguration",
            f"{SECRET_NAMES_ENV} must be a JSON object of environment variable -> secret name",
        )
    vault = environ.get(SECRETS_VAULT_ENV, "")
    if not vault:
        raise SecretError(
            "InvalidConfiguration", f"{SECRET_NAMES_ENV} is set but {SECRETS_VAULT_ENV} is not"
        )
    reader = VaultReader(vault, ManagedIdentity(environ))
    return {variable: reader.read(secret) for variable, secret in names.items()}


class FeedError(Exception):
    """The task feed cannot be read (no access, a malformed entry): no more tasks from it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TaskFeed:
    """Where the controller leaves a job's next tasks once it has run those it was started
    with: entry ``<location>/<seq>.json`` (seq 1, 2, ...) holds ``{"task_ids": [...]}``, an
    empty list meaning that there is no more. ``location`` is a folder on the node (tiers that
    share a disk with the controller, or write over SSH) or the https URL of a blob prefix,
    read with the node's managed identity (Storage Blob Data Reader on the container)."""

    def __init__(self, location: str, environ: dict[str, str]) -> None:
        self.location = location.rstrip("/")
        self.remote = urllib.parse.urlsplit(self.location).scheme in ("https", "http")
        self._identity = ManagedIdentity(environ) if self.remote else None
        self._token = ""
        self._token_at = 0.0

    def read(self, seq: int) -> list[str] | None:
        """The entry's task ids, or None while it is not there."""
        if self.remote:
            body = self._get_blob(f"{self.location}/{seq}.json")
        else:
            try:
                body = Path(self.location, f"{seq}.json").read_bytes()
            except FileNotFoundError:
                return None
            except OSError as err:
                raise FeedError(f"cannot read {self.location}/{seq}.json: {err}") from err
        if body is None:
            return None
        try:
            task_ids = json.loads(body.decode("utf-8")).get("task_ids")
        except (ValueError, AttributeError):
            task_ids = None
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise FeedError(f'entry {seq} of {self.location} is not {{"task_ids": [...]}}')
        return task_ids

    def _get_blob(self, url: str) -> bytes | None:
        headers = {"Authorization": "Bearer " + self._bearer(), "x-ms-version": STORAGE_API_VERSION}
        try:
            answer = _http_get(url, headers)
        except SecretError as err:
            raise FeedError(err.message) from err
        if answer.status == 404:
            return None
        if answer.status == 200:
            return answer.body
        reason = answer.headers.get("x-ms-error-code") or answer.headers.get("X-Ms-Error-Code")
        raise FeedError(
            f"reading {url} failed with HTTP {answer.status} ({reason or 'no error code'}): the "
            "node's managed identity needs Storage Blob Data Reader on the feed's container"
        )

    def _bearer(self) -> str:
        if self._identity is None:
            raise AssertionError("a local feed has no identity")
        if not self._token or time.monotonic() - self._token_at > TOKEN_REUSE_S:
            try:
                self._token = self._identity.token(STORAGE_RESOURCE)
            except SecretError as err:
                raise FeedError(err.message) from err
            self._token_at = time.monotonic()
        return self._token


class Worker:
    def __init__(
        self,
        worker_id: str,
        task_ids: list[str],
        domains: dict[str, str],
        result_dir: str,
        heartbeat_interval: float,
        client_cmd: str,
        batch: bool = False,
        boot: Callable[[EventWriter], VmBoot] | None = None,
        feed: TaskFeed | None = None,
        feed_wait: float = DEFAULT_TASK_FEED_WAIT_S,
    ) -> None:
        self.worker_id = worker_id
        self.task_ids = task_ids
        self.domains = domains
        self.result_dir = Path(result_dir)
        self.heartbeat_interval = heartbeat_interval
        self.client_argv = shlex.split(client_cmd)
        self.batch = batch
        self.events = EventWriter(worker_id, on_broken_pipe=lambda: self.terminate(141))
        self.boot = boot(self.events) if boot is not None else None
        self.feed = feed
        self.feed_wait = feed_wait
        self.current_task: str | None = None
        self.current_client: ClientRun | None = None
        self._stop_heartbeat = threading.Event()
        self._meta_dir = ""
        # Given to the WAA client only; never to os.environ, output or events.
        self._secret_environment: dict[str, str] = {}

    def warm_up(self) -> int:
        """Check this node: the image runs (this process is in it) and the golden image is
        there."""
        self.events.emit("started", task_ids=[])
        try:
            if self.boot is not None:
                self.boot.check_image()
        except BootError as err:
            self.events.emit("failed", code=err.code, message=err.message, task_id=None)
            return BOOT_FAILURE_EXIT
        node = os.environ.get("AZ_BATCH_NODE_ID") or socket.gethostname()
        self.events.emit("warm_up", node=node)
        self.events.emit("finished", completed=0)
        return 0

    def run(self) -> int:
        try:
            self._secret_environment = read_secret_environment(dict(os.environ))
        except SecretError as err:
            self.events.emit("failed", code=err.code, message=err.message)
            return SECRET_FAILURE_EXIT
        self.result_dir.mkdir(parents=True, exist_ok=True)
        self._meta_dir = tempfile.mkdtemp(prefix="waa-worker-")
        self.events.emit("started", task_ids=list(self.task_ids))
        heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        heartbeat.start()
        completed = 0
        try:
            if self.boot is not None:
                self.boot.check_image()
                self.boot.start()
            completed = self.run_tasks(self.task_ids)
            if self.feed is not None:
                completed += self.follow_feed()
        except BootError as err:
            # No heartbeat may follow the job's last event.
            self._stop_heartbeats(heartbeat)
            self.events.emit(
                "failed",
                code=err.code,
                message=err.message,
                task_id=self.current_task,
                boot_output=err.output[-OUTPUT_TAIL_LINES:],
            )
            return BOOT_FAILURE_EXIT
        finally:
            self._stop_heartbeats(heartbeat)
            shutil.rmtree(self._meta_dir, ignore_errors=True)
            if self.boot is not None:
                self.boot.stop()
        self.events.emit("finished", completed=completed)
        return 0

    def run_tasks(self, task_ids: list[str]) -> int:
        if self.batch:
            return self.run_batched(task_ids)
        for task_id in task_ids:
            self.run_task(task_id)
        return len(task_ids)

    def follow_feed(self) -> int:
        """The tasks the controller hands this job after the first ones, entry by entry, on
        the VM already booted, until an empty entry (or none within ``feed_wait``)."""
        if self.feed is None:
            return 0
        done, seq = 0, 1
        while True:
            task_ids = self._await_entry(self.feed, seq)
            if not task_ids:
                return done
            self.events.emit("tasks_added", seq=seq, task_ids=task_ids)
            done += self.run_tasks(task_ids)
            seq += 1

    def _await_entry(self, feed: TaskFeed, seq: int) -> list[str]:
        deadline = time.monotonic() + self.feed_wait
        announced = False
        while True:
            try:
                task_ids = feed.read(seq)
            except FeedError as err:
                self.events.emit("feed_error", seq=seq, message=err.message)
                return []
            if task_ids is not None:
                return task_ids
            if not announced:
                # Only when the entry is not there yet: the controller usually writes it while
                # the last task runs.
                self.events.emit("awaiting", seq=seq)
                announced = True
            if time.monotonic() >= deadline:
                _log(f"waa_worker: no entry {seq} in the task feed within {self.feed_wait:.0f}s")
                return []
            time.sleep(TASK_FEED_POLL_S)

    def run_task(self, task_id: str) -> None:
        domain = self.domains.get(task_id)
        if domain is not None and self.boot is not None and not self.boot.answering():
            self.boot.restart(task_id)  # the VM stopped answering between tasks
        self._begin(task_id)
        started = time.monotonic()
        if domain is None:
            outcome = ("error", 0.0, "task id not found in the test_all meta file")
        else:
            outcome = self._run_client(task_id, domain)
            if outcome[0] == "error" and self.boot is not None and not self.boot.answering():
                # The client failed because the VM went away: restart it, run the task again.
                self.boot.restart(task_id)
                self._begin(task_id)
                started = time.monotonic()
                outcome = self._run_client(task_id, domain)
        self._report(task_id, started, outcome)

    def run_batched(self, task_ids: list[str]) -> int:
        """These tasks through as few client processes as possible (one, unless one exits
        early); the same events as one process per task."""
        remaining = []
        for task_id in task_ids:
            if task_id in self.domains:
                remaining.append(task_id)
            else:
                self.run_task(task_id)  # reported as an error without starting a client
        done = len(task_ids) - len(remaining)
        while remaining:
            ran, remaining = self._run_client_batch(remaining)
            done += ran
        return done

    def _run_client_batch(self, task_ids: list[str]) -> tuple[int, list[str]]:
        """Run one client over ``task_ids``; (tasks reported, tasks still to run)."""
        meta: dict[str, list[str]] = {}
        for task_id in task_ids:
            meta.setdefault(self.domains[task_id], []).append(task_id)
        order = [task_id for ids in meta.values() for task_id in ids]  # WAA's own order
        meta_path = os.path.join(self._meta_dir, f"batch-{len(os.listdir(self._meta_dir))}.json")
        with open(meta_path, "w") as handle:
            json.dump(meta, handle)
        argv = self.client_argv + [
            "--test_all_meta_path",
            meta_path,
            "--result_dir",
            str(self.result_dir),
        ]
        index = 0
        self._begin(order[0])
        started = time.monotonic()
        try:
            client = ClientRun(argv, self._client_environment())
        except OSError as exc:
            self._report(
                order[0],
                started,
                ("error", 0.0, f"could not start the WAA client {argv[0]!r}: {exc}"),
            )
            return 1, order[1:]
        self.current_client = client
        returncode = None
        while index < len(order):
            if returncode is None:
                try:
                    returncode = client.process.wait(timeout=RESULT_POLL_S)
                    client.wait()
                except subprocess.TimeoutExpired:
                    pass
            if result_written(self.result_dir, order[index]):
                self._report(order[index], started, read_result(self.result_dir, order[index]))
                index += 1
                if index < len(order):
                    self._begin(order[index])
                    started = time.monotonic()
                continue
            if returncode is not None:
                break
        self.current_client = None
        if index == len(order):
            return index, []
        if self.boot is not None and not self.boot.answering():
            # The client stopped because the VM went away: restart it once; the task in
            # flight and the rest run again on a new client.
            self.boot.restart(order[index])
            return index, order[index:]
        if returncode != 0:
            output = "\n".join(client.tail) or "(no output)"
            error = f"WAA client exited with code {returncode}:\n{output}"
        else:
            error = (
                f"WAA client exited 0 but wrote no result.txt for this task under {self.result_dir}"
            )
        self._report(order[index], started, ("error", 0.0, error))
        return index + 1, order[index + 1 :]

    def _begin(self, task_id: str) -> None:
        self.current_task = task_id
        self.events.emit("task_started", task_id=task_id, domain=self.domains.get(task_id))

    def _report(self, task_id: str, started: float, outcome: tuple[str, float, str | None]) -> None:
        status, score, error = outcome
        self.current_task = None
        self.events.emit(
            "task_result",
            task_id=task_id,
            domain=self.domains.get(task_id),
            status=status,
            score=score,
            duration_s=round(time.monotonic() - started, 3),
            error=error,
        )

    def _run_client(self, task_id: str, domain: str) -> tuple[str, float, str | None]:
        meta_path = os.path.join(self._meta_dir, task_id + ".json")
        with open(meta_path, "w") as handle:
            json.dump({domain: [task_id]}, handle)
        argv = self.client_argv + [
            "--test_all_meta_path",
            meta_path,
            "--result_dir",
            str(self.result_dir),
        ]
        try:
            client = ClientRun(argv, self._client_environment())
        except OSError as exc:
            return "error", 0.0, f"could not start the WAA client {argv[0]!r}: {exc}"
        self.current_client = client
        returncode = client.wait()
        self.current_client = None
        if returncode != 0:
            output = "\n".join(client.tail) or "(no output)"
            return "error", 0.0, f"WAA client exited with code {returncode}:\n{output}"
        return read_result(self.result_dir, task_id)

    def _client_environment(self) -> dict[str, str]:
        """The WAA client's environment: ours, the secrets, and the address of the VM the
        worker booted (``WAA_VM_READY_URL``; WAA's client has its own setting for it)."""
        env = {**os.environ, **self._secret_environment}
        if self.boot is not None and self.boot.phase == "tasks":
            env["WAA_VM_READY_URL"] = self.boot.probe_url
        return env

    def _stop_heartbeats(self, heartbeat: threading.Thread) -> None:
        self._stop_heartbeat.set()
        heartbeat.join()

    def _heartbeat_loop(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_interval):
            client = self.current_client
            self.events.emit(
                "heartbeat",
                task_id=self.current_task,
                client_idle_s=round(client.idle_seconds(), 1) if client else None,
                phase=self.boot.phase if self.boot is not None else "tasks",
            )

    def terminate(self, exit_code: int) -> None:
        """Stop at once: no more events, no client or VM left behind."""
        self.events.close()
        client = self.current_client
        if client is not None:
            client.kill()
        vm = self.boot.process if self.boot is not None else None
        if vm is not None:
            vm.kill()
        os._exit(exit_code)


def result_written(result_dir: Path, task_id: str) -> bool:
    """Has the client written this task's score (a whole line, not a file still empty)?"""
    for path in Path(result_dir).glob(f"**/{task_id}/result.txt"):
        with contextlib.suppress(OSError):
            if path.read_text().endswith("\n"):
                return True
    return False


def read_result(result_dir: Path, task_id: str) -> tuple[str, float, str | None]:
    """(status, score, error) from the newest ``<result_dir>/**/<task_id>/result.txt``."""
    candidates = sorted(
        Path(result_dir).glob(f"**/{task_id}/result.txt"),
        key=lambda path: path.stat().st_mtime,
    )
    if not candidates:
        return (
            "error",
            0.0,
            f"WAA client exited 0 but wrote no result.txt for this task under {result_dir}",
        )
    text = candidates[-1].read_text().strip()
    try:
        score = float(text)
    except ValueError:
        return "error", 0.0, f"unreadable score {text[:100]!r} in {candidates[-1]}"
    # WAA scores are in [0, 1]; only a full score counts as solved, partial credit is kept in score.
    return ("success" if score >= 1.0 else "fail"), score, None


def load_domains(meta_path: str) -> dict[str, str]:
    """Map task id -> domain from a WAA test_all.json (domain -> list of task ids)."""
    with open(meta_path) as handle:
        meta = json.load(handle)
    if not isinstance(meta, dict):
        raise ValueError("expected a JSON object mapping domain -> list of task ids")
    domains = {}
    for domain, ids in meta.items():
        if not isinstance(ids, list):
            raise ValueError(f"domain {domain!r} does not map to a list of task ids")
        for task_id in ids:
            domains[str(task_id)] = domain
    return domains


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run WAA tasks and report structured events.")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--task-ids", default="", help="comma-separated WAA task ids")
    parser.add_argument(
        "--warm-up", action="store_true", help="check the node and the golden image; no task"
    )
    parser.add_argument(
        "--test-all-meta",
        default=os.environ.get("WAA_TEST_ALL_META", DEFAULT_TEST_ALL_META),
        help="WAA test_all.json: domain -> list of task ids",
    )
    parser.add_argument(
        "--result-dir", default=os.environ.get("WAA_RESULT_DIR", DEFAULT_RESULT_DIR)
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=float(os.environ.get("HEARTBEAT_INTERVAL", "30")),
    )
    parser.add_argument(
        "--golden-image-path",
        default=os.environ.get("WAA_GOLDEN_IMAGE_PATH", DEFAULT_GOLDEN_IMAGE_PATH),
        help="the prepared Windows VM image (the folder holding data.img), as mounted",
    )
    parser.add_argument(
        "--vm-boot-timeout",
        type=float,
        default=float(os.environ.get("WAA_VM_BOOT_TIMEOUT", "0") or 0),
        help="seconds the VM may take to answer its probe (0: wait, as WAA does)",
    )
    args = parser.parse_args(argv)
    args.task_ids = [t.strip() for t in args.task_ids.split(",") if t.strip()]
    if not args.task_ids and not args.warm_up:
        parser.error("--task-ids names no task")
    if args.heartbeat_interval <= 0:
        parser.error("--heartbeat-interval must be positive")
    if args.vm_boot_timeout < 0:
        parser.error("--vm-boot-timeout must be >= 0")
    return args


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes")


def _vm_boot(args: argparse.Namespace) -> Callable[[EventWriter], VmBoot]:
    """The VM boot as WAA's Azure entry does it, from the arguments and the environment."""
    interval = float(os.environ.get("WAA_PROBE_INTERVAL", DEFAULT_PROBE_INTERVAL_S))
    return lambda events: VmBoot(
        events,
        image_path=args.golden_image_path,
        start_cmd=os.environ.get("WAA_VM_START_CMD", DEFAULT_VM_START_CMD),
        probe_url=os.environ.get("WAA_PROBE_URL", DEFAULT_PROBE_URL),
        probe_interval=interval if interval > 0 else DEFAULT_PROBE_INTERVAL_S,
        boot_timeout=args.vm_boot_timeout,
        storage_link=os.environ.get("WAA_STORAGE_LINK", DEFAULT_GOLDEN_IMAGE_PATH),
    )


def _task_feed() -> TaskFeed | None:
    location = os.environ.get(TASK_FEED_ENV, "").strip()
    return TaskFeed(location, dict(os.environ)) if location else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        domains = load_domains(args.test_all_meta)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"waa_worker: cannot read {args.test_all_meta}: {exc}\n")
        return 2
    worker = Worker(
        worker_id=args.worker_id,
        task_ids=args.task_ids,
        domains=domains,
        result_dir=args.result_dir,
        heartbeat_interval=args.heartbeat_interval,
        client_cmd=os.environ.get("WAA_CLIENT_CMD", DEFAULT_CLIENT_CMD),
        batch=_flag(os.environ.get("WAA_CLIENT_BATCH", "")),
        boot=_vm_boot(args) if _flag(os.environ.get("WAA_VM_BOOT", "1")) else None,
        feed=_task_feed(),
        feed_wait=float(os.environ.get(TASK_FEED_WAIT_ENV) or DEFAULT_TASK_FEED_WAIT_S),
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.terminate(143))
    signal.signal(signal.SIGHUP, lambda signum, frame: worker.terminate(129))
    signal.signal(signal.SIGINT, lambda signum, frame: worker.terminate(130))
    return worker.warm_up() if args.warm_up else worker.run()


if __name__ == "__main__":
    sys.exit(main())
