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

with events started, task_started, heartbeat, task_result and finished. On SIGTERM it prints
nothing more, kills the client and exits with 143.

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
KEY_VAULT_API_VERSION = "7.4"
SECRETS_ROLE = "Key Vault Secrets User"
SECRET_FAILURE_EXIT = 3
IMDS_ENDPOINT = "http://169.254.169.254"
HTTP_TIMEOUT_S = 30
TRANSIENT_ATTEMPTS = 5


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
    ) -> None:
        self.worker_id = worker_id
        self.task_ids = task_ids
        self.domains = domains
        self.result_dir = Path(result_dir)
        self.heartbeat_interval = heartbeat_interval
        self.client_argv = shlex.split(client_cmd)
        self.batch = batch
        self.events = EventWriter(worker_id, on_broken_pipe=lambda: self.terminate(141))
        self.current_task: str | None = None
        self.current_client: ClientRun | None = None
        self._stop_heartbeat = threading.Event()
        self._meta_dir = ""
        # Given to the WAA client only; never to os.environ, output or events.
        self._secret_environment: dict[str, str] = {}

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
            if self.batch:
                completed = self.run_batched()
            else:
                for task_id in self.task_ids:
                    self.run_task(task_id)
                    completed += 1
        finally:
            self._stop_heartbeat.set()
            shutil.rmtree(self._meta_dir, ignore_errors=True)
        self.events.emit("finished", completed=completed)
        return 0

    def run_task(self, task_id: str) -> None:
        domain = self.domains.get(task_id)
        self._begin(task_id)
        started = time.monotonic()
        if domain is None:
            outcome = ("error", 0.0, "task id not found in the test_all meta file")
        else:
            outcome = self._run_client(task_id, domain)
        self._report(task_id, started, outcome)

    def run_batched(self) -> int:
        """All tasks through as few client processes as possible (one, unless one exits
        early); the same events as one process per task."""
        remaining = []
        for task_id in self.task_ids:
            if task_id in self.domains:
                remaining.append(task_id)
            else:
                self.run_task(task_id)  # reported as an error without starting a client
        done = len(self.task_ids) - len(remaining)
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
            client = ClientRun(argv, dict(os.environ))
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
            client = ClientRun(argv, {**os.environ, **self._secret_environment})
        except OSError as exc:
            return "error", 0.0, f"could not start the WAA client {argv[0]!r}: {exc}"
        self.current_client = client
        returncode = client.wait()
        self.current_client = None
        if returncode != 0:
            output = "\n".join(client.tail) or "(no output)"
            return "error", 0.0, f"WAA client exited with code {returncode}:\n{output}"
        return read_result(self.result_dir, task_id)

    def _heartbeat_loop(self) -> None:
        while not self._stop_heartbeat.wait(self.heartbeat_interval):
            client = self.current_client
            self.events.emit(
                "heartbeat",
                task_id=self.current_task,
                client_idle_s=round(client.idle_seconds(), 1) if client else None,
            )

    def terminate(self, exit_code: int) -> None:
        """Stop at once: no more events, no client left behind."""
        self.events.close()
        client = self.current_client
        if client is not None:
            client.kill()
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
    parser.add_argument("--task-ids", required=True, help="comma-separated WAA task ids")
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
    args = parser.parse_args(argv)
    args.task_ids = [t.strip() for t in args.task_ids.split(",") if t.strip()]
    if not args.task_ids:
        parser.error("--task-ids names no task")
    if args.heartbeat_interval <= 0:
        parser.error("--heartbeat-interval must be positive")
    return args


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
        batch=os.environ.get("WAA_CLIENT_BATCH", "").lower() in ("1", "true", "yes"),
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.terminate(143))
    signal.signal(signal.SIGHUP, lambda signum, frame: worker.terminate(129))
    signal.signal(signal.SIGINT, lambda signum, frame: worker.terminate(130))
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
