"""A pre-imported Python that forks a child per module script (see the package docstring)."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path

from warm_python import endpoint

# What a module imports before its first request, measured per module on the tiers' playbooks:
# azure.azcollection's module_utils (and with them most Azure SDKs); ansible-core's module side,
# which an AnsiballZ payload would otherwise compile from its zip for every module (0.11 s);
# the API versions azcollection's clients load on first use (azure.mgmt.storage's models alone
# are 1.3 s); and the SDKs of this collection's own Azure modules.
PRELOAD = (
    "ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common",
    "ansible.module_utils.basic",
    "ansible.module_utils._internal._ansiballz._loader",
    "azure.mgmt.authorization.v2020_04_01_preview",
    "azure.mgmt.compute.v2024_07_01",
    "azure.mgmt.containerregistry.models",
    "azure.mgmt.resource.resources.v2022_09_01",
    "azure.mgmt.storage.models",
    "azure.mgmt.storage.v2018_02_01",
    "msal_extensions",
    "msrestazure.azure_cloud",
    "tenacity",
    "azure.ai.ml",
    "azure.ai.ml.entities",
    "azure.containerregistry",
    "azure.storage.fileshare",
)
IDLE_SECONDS = int(os.environ.get("WARM_PYTHON_IDLE_SECONDS", "90"))


def _preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    # Collection code comes from each module's AnsiballZ payload, as in a fresh interpreter: a
    # collection under the project's collections/ shadows the installed one, and this
    # collection's own code changes while it is worked on. ansible-core's module side stays: a
    # payload carries the controller's copy of it, and the inventories name warm-python only
    # next to the controller's Python, so it is this installation's (another installation state
    # is another server).
    for name in [n for n in sys.modules if n.split(".")[0] == "ansible_collections"]:
        del sys.modules[name]


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _die_with_client(conn: socket.socket) -> None:
    """The client went away (killed): end as a cold interpreter would on SIGTERM."""
    while True:
        try:
            if not conn.recv(4096):
                break
        except OSError:
            break
    os.kill(os.getpid(), signal.SIGTERM)


def _run_child(conn: socket.socket, listener: socket.socket) -> None:
    listener.close()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    status = 1
    try:
        request, fds = endpoint.receive_request(conn, 3)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        script = request["argv"][0]
        sys.argv = list(request["argv"])
        sys.path.insert(0, str(Path(script).resolve().parent))
        conn.sendall(f"{os.getpid()}\n".encode())
        threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
        try:
            runpy.run_path(script, run_name="__main__")
            status = 0
        except SystemExit as stop:
            status = _exit_status(stop.code)
        except BaseException:  # noqa: BLE001 - reported as the interpreter would
            traceback.print_exc()
            status = 1
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        conn.sendall(f"{status}\n".encode())
    finally:
        os._exit(status)


def _reap() -> bool:
    """Collect ended children; True while some still run."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def serve(path: Path) -> None:
    lock_path, log_path = endpoint.lock_path(path), endpoint.log_path(path)
    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    os.utime(lock)  # the lock's mtime: when this server began to warm up (clients read it)
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
    _preload()
    staging = path.with_suffix(f".{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, path)  # clients connect only once the imports are done
    ours = path.stat().st_ino
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    idle = 0.0
    try:
        while idle < IDLE_SECONDS:
            ready = selector.select(timeout=1.0)
            running = _reap()
            if ready:
                conn, _address = listener.accept()
                if os.fork() == 0:
                    _run_child(conn, listener)
                conn.close()
                idle = 0.0
            elif not running:
                idle += 1.0
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == ours:  # not a successor's socket
                path.unlink()
        for leftover in (log_path, lock_path):
            leftover.unlink(missing_ok=True)
        listener.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
