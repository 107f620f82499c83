"""warm-python runs a module script exactly as the real interpreter would, only warm.

Each test has a runtime directory of its own (so its own servers) and stops them at the end.
A probe script reports what a module could observe: argv, stdin, cwd, environment, umask, its
exit status and stderr, and whether the Azure SDKs were imported before it started (warm).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ansible
import psutil
import pytest

from warm_python import endpoint

LAUNCHER = Path(sys.executable).parent / "warm-python"
PROBE = """\
import json, os, sys
report = {
    "argv": sys.argv,
    "stdin": sys.stdin.read(),
    "cwd": os.getcwd(),
    "probe_variable": os.environ.get("PROBE_VARIABLE"),
    "umask": os.umask(0),
    "warm": "azure.mgmt.compute" in sys.modules,
    "collections_imported": "ansible_collections" in sys.modules,
    "ansible_file": getattr(sys.modules.get("ansible"), "__file__", None),
    "pid": os.getpid(),
}
print(json.dumps(report), flush=True)
print("to stderr", file=sys.stderr)
if report["stdin"] == "sleep":
    import time
    time.sleep(60)
if os.environ.get("PROBE_COLD_SECONDS") and not report["warm"]:
    import time  # as long as an Azure module's cold imports
    time.sleep(float(os.environ["PROBE_COLD_SECONDS"]))
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""

pytestmark = pytest.mark.skipif(not LAUNCHER.exists(), reason="make bootstrap installs warm-python")


@pytest.fixture
def runtime():
    """A runtime directory short enough for a Unix socket, and its servers stopped after."""
    path = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    yield path
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(path) in part for part in process.info["cmdline"] or []):
                process.kill()
    shutil.rmtree(path, ignore_errors=True)


def _environ(runtime: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PROBE_VARIABLE": "seen", **extra}


def _script(tmp_path: Path, name: str = "AnsiballZ_azure_rm_probe.py") -> Path:
    script = tmp_path / name
    script.write_text(PROBE)
    return script


def _run(script: Path, environ: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LAUNCHER), str(script)],
        input="module arguments",
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=60,
    )


def _wait_for_server(environ: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while not endpoint.socket_path(environ).exists():
        assert time.monotonic() < deadline, "no warm server came up"
        time.sleep(0.2)


def _warm_run(tmp_path, runtime, **extra) -> tuple[subprocess.CompletedProcess, dict]:
    script = _script(tmp_path)
    environ = _environ(runtime, **extra)
    _run(script, environ, tmp_path)  # cold, and starts the server for this environment
    _wait_for_server(environ)
    done = _run(script, environ, tmp_path)
    return done, json.loads(done.stdout)


def _sleeping_module(tmp_path: Path, runtime: Path) -> subprocess.Popen:
    client = subprocess.Popen(
        [str(LAUNCHER), str(_script(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_environ(runtime),
        cwd=tmp_path,
    )
    client.stdin.write("sleep")
    client.stdin.close()
    return client


def test_a_warm_module_sees_what_a_cold_one_sees(tmp_path, runtime):
    script = _script(tmp_path)
    environ = _environ(runtime, PROBE_EXIT="3")
    cold = _run(script, {**environ, "WARM_PYTHON": "0"}, tmp_path)
    warm, report = _warm_run(tmp_path, runtime, PROBE_EXIT="3")

    cold_report = json.loads(cold.stdout)
    assert report["warm"] and not cold_report["warm"]
    # Collection code comes from the module's payload; ansible-core's module side is this
    # installation's, the one a payload carries a copy of.
    assert not report["collections_imported"], "collection code must come from the payload"
    assert cold_report["ansible_file"] is None
    assert report["ansible_file"] == str(Path(ansible.__file__))
    for key in ("argv", "stdin", "cwd", "probe_variable", "umask"):
        assert report[key] == cold_report[key], key
    assert report["stdin"] == "module arguments"
    assert (warm.returncode, warm.stderr) == (cold.returncode, cold.stderr) == (3, "to stderr\n")


def test_a_module_that_finds_the_server_warming_up_waits_for_it(tmp_path, runtime):
    # The first module runs cold (and as long as a cold Azure module) while the server it
    # started warms up; the second comes before the warm-up ends and may wait as long again.
    script = _script(tmp_path)
    environ = _environ(runtime, PROBE_COLD_SECONDS="15")
    first = json.loads(_run(script, environ, tmp_path).stdout)
    assert not first["warm"]
    warmed = endpoint.socket_path(environ).exists()
    second = json.loads(_run(script, environ, tmp_path).stdout)
    assert second["warm"], "waited for the warm-up" if not warmed else "the server was up"


def test_a_module_does_not_wait_longer_than_the_warm_up_has_taken(tmp_path, runtime):
    # A server that has warmed up for 1 s (its lock held, no socket yet): a module waits about
    # 1 s more, then runs cold.
    environ = _environ(runtime)
    socket_file = endpoint.socket_path(environ)
    with open(endpoint.lock_path(socket_file), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.utime(lock.fileno())
        time.sleep(1)
        started = time.monotonic()
        report = json.loads(_run(_script(tmp_path), environ, tmp_path).stdout)
        waited = time.monotonic() - started
    assert not report["warm"] and 0.8 < waited < 10, waited


def test_other_scripts_and_other_arguments_run_cold(tmp_path, runtime):
    environ = _environ(runtime)
    _warm_run(tmp_path, runtime)  # a server is up for this environment
    other = _script(tmp_path, "AnsiballZ_command.py")
    assert not json.loads(_run(other, environ, tmp_path).stdout)["warm"]
    version = subprocess.run(
        [str(LAUNCHER), "-c", "import sys; print(sys.version)"], capture_output=True, text=True
    )
    assert version.stdout.strip() == sys.version


def test_another_environment_gets_another_server(tmp_path, runtime):
    _warm_run(tmp_path, runtime)
    _, report = _warm_run(tmp_path, runtime, PROBE_VARIABLE="changed")
    assert report["probe_variable"] == "changed" and report["warm"]
    assert len(list(runtime.glob("warm-python-*/*.sock"))) == 2


def test_a_signal_to_the_client_ends_the_module_the_same_way(tmp_path, runtime):
    _warm_run(tmp_path, runtime)
    client = _sleeping_module(tmp_path, runtime)
    module_pid = json.loads(client.stdout.readline())["pid"]
    assert module_pid != client.pid
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=10) == -signal.SIGTERM
    assert psutil.wait_procs([psutil.Process(module_pid)], timeout=10)[1] == []


def test_a_killed_client_takes_its_module_with_it(tmp_path, runtime):
    _warm_run(tmp_path, runtime)
    client = _sleeping_module(tmp_path, runtime)
    module = psutil.Process(json.loads(client.stdout.readline())["pid"])
    client.kill()
    client.wait(timeout=10)
    gone, alive = psutil.wait_procs([module], timeout=10)
    assert gone and not alive
