"""The container runtime nodes share: a container is a local process (``bash -c <command>``) in a
working directory of its own, with the environment a container of its image would have, its
stdout and stderr going to a log file the caller names.

The image's environment comes from the registry's record of it (see ``image_pull``); the WAA
image (a repository ending in ``winarena``) also gets what the WAA client needs here:
``WAA_CLIENT_CMD`` runs the stand-in (``localazure.workload.waa_standin``) and
``WAA_TEST_ALL_META`` names the synthetic 154-task set, and ``WAA_CLIENT_BATCH=1`` has the worker
run a job's tasks through one stand-in process (WAA's own task loop). ``PATH`` starts with the emulator's own
Python environment, so ``python`` in a command is a Python with the project's packages.

The WAA image's Windows VM is the stand-in ``localazure.workload.waa_vm`` (``WAA_VM_START_CMD``):
each container gets a loopback address of its own for the VM's ``GET /probe``
(``WAA_PROBE_URL``, ``WAA_STANDIN_VM_LISTEN``, port 5000 as WAA's 20.20.20.21:5000), the probe
loop's interval scaled down (0.5 s for WAA's 5 s), and no ``/storage`` link (the container's
``/`` is the host's): the golden image is where the tier mounts it (``--golden-image-path``).
``waa_vm_environment`` adds the boot time of the node's size and, on a node without KVM, why.

The nested-virtualization rule: the WAA image runs a Windows VM under KVM, so on a node whose
VM size lacks nested virtualization, or that uses TrustedLaunch, it prints
``KVM_UNAVAILABLE_LOG`` and exits with code 1 (``no_kvm_reason`` says why).

Processes are Linux process groups; on start the emulator kills any it left behind (found by
the ``LOCALAZURE_ML_CONTAINER_OF`` marker in their environment).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from localazure.nodes.vm_catalog import VmSize
from localazure.workload.task_model import SYNTHETIC_TEST_ALL

MARKER = "LOCALAZURE_ML_CONTAINER_OF"
WAA_REPOSITORY_SUFFIX = "winarena"
WAA_PROBE_PORT = 5000
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What the WAA container prints when it starts on a node without KVM (TrustedLaunch, or a VM
# size without nested virtualization), before it exits with code 1.
KVM_UNAVAILABLE_LOG = """\
Starting WinArena...
Checking for KVM acceleration...
ERROR: KVM acceleration is not available: /dev/kvm not found.
ERROR: nested virtualization is not available on this node, so the Windows VM cannot start.
{reason}
"""


# -- the container's environment ------------------------------------------------------------------


def is_waa_image(image_ref: str) -> bool:
    repository = image_ref.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return repository.lower().endswith(WAA_REPOSITORY_SUFFIX)


def needs_nested_virtualization(image_ref: str) -> bool:
    """The WAA image runs a Windows VM under KVM; other images need nothing special."""
    return is_waa_image(image_ref)


def image_environment(image_ref: str, image: dict[str, Any]) -> dict[str, str]:
    """Environment variables the image defines (``Env`` of its config), plus what the WAA
    image needs in the emulator."""
    env: dict[str, str] = {}
    declared = image.get("env") or (image.get("config") or {}).get("Env") or []
    if isinstance(declared, dict):
        env.update({str(k): str(v) for k, v in declared.items()})
    else:
        for item in declared:
            name, _, value = str(item).partition("=")
            env[name] = value
    if is_waa_image(image_ref):
        env.setdefault("WAA_CLIENT_CMD", f"{sys.executable} -m localazure.workload.waa_standin")
        env.setdefault("WAA_TEST_ALL_META", str(SYNTHETIC_TEST_ALL))
        # One stand-in process per job runs the job's tasks, as WAA's own task loop does.
        env.setdefault("WAA_CLIENT_BATCH", "1")
        env.update(_standin_vm_environment())
    env.pop("PATH", None)
    return env


def _standin_vm_environment() -> dict[str, str]:
    """The stand-in VM of one container: its start command and a probe address of its own."""
    address = "127.{}.{}.{}".format(*(1 + secrets.randbelow(254) for _ in range(3)))
    return {
        "WAA_VM_START_CMD": f"{sys.executable} -m localazure.workload.waa_vm",
        "WAA_STANDIN_VM_LISTEN": f"{address}:{WAA_PROBE_PORT}",
        "WAA_PROBE_URL": f"http://{address}:{WAA_PROBE_PORT}/probe",
        "WAA_PROBE_INTERVAL": "0.5",
        "WAA_STORAGE_LINK": "",
    }


def waa_vm_environment(image_ref: str, size: VmSize, timing: Any) -> dict[str, str]:
    """The stand-in VM's boot time on a node of this size (``Timing.vm_boot``)."""
    if not is_waa_image(image_ref):
        return {}
    return {"WAA_STANDIN_VM_BOOT_S": f"{timing.vm_boot(size.vcpus):.3f}"}


def container_environment(
    state_dir: Path,
    workdir: Path,
    *layers: dict[str, str],
) -> dict[str, str]:
    """The process environment: a clean base, then each layer in order (later layers win)."""
    env = {
        "HOME": str(workdir),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": str(workdir),
    }
    for layer in layers:
        env.update(layer)
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{python_bin}:{os.environ.get('PATH', _SYSTEM_PATH)}"
    env[MARKER] = str(state_dir)
    return env


# -- processes ------------------------------------------------------------------------------------


class ContainerRuntime:
    """The processes of running containers, by run key. Lives in the emulator process only."""

    def __init__(self) -> None:
        self._processes: dict[str, subprocess.Popen] = {}
        # Each process's log and where its own output begins (logs are appended to).
        self._logs: dict[str, tuple[Path, int]] = {}
        self._lock = threading.Lock()

    def start(
        self, key: str, command: str, env: dict[str, str], workdir: Path, log_path: Path
    ) -> int:
        workdir.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log_start = log.tell()
            process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._processes[key] = process
            self._logs[key] = (log_path, log_start)
        return process.pid

    def output_matches(self, key: str, pattern: str) -> bool:
        """Whether the process's output so far has a line matching ``pattern``."""
        with self._lock:
            log_path, start = self._logs.get(key, (None, 0))
        if log_path is None:
            return False
        try:
            with open(log_path, "rb") as log:
                log.seek(start)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return False
        return re.search(pattern, text, re.MULTILINE) is not None

    def has(self, key: str) -> bool:
        with self._lock:
            return key in self._processes

    def running_keys(self) -> list[str]:
        with self._lock:
            return list(self._processes)

    def exit_code(self, key: str) -> int | None:
        """None while running; a killed process reports 128 + signal, as containers do."""
        with self._lock:
            process = self._processes[key]
        code = process.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def signal(self, key: str, sig: int) -> None:
        with self._lock:
            process = self._processes.get(key)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    def terminate(self, key: str) -> None:
        """SIGTERM (and SIGCONT, so that a frozen process can act on it)."""
        self.signal(key, signal.SIGTERM)
        self.signal(key, signal.SIGCONT)

    def kill(self, key: str) -> None:
        self.signal(key, signal.SIGKILL)

    def forget(self, key: str) -> None:
        with self._lock:
            process = self._processes.pop(key, None)
            self._logs.pop(key, None)
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def stop_all(self) -> None:
        for key in self.running_keys():
            self.forget(key)


def kill_leftovers(state_dir: Path) -> int:
    """Kill container processes a previous run of this emulator left behind; return how many."""
    marker = f"{MARKER}={state_dir}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def no_kvm_reason(size: VmSize, security_type: str, pool_name: str) -> str | None:
    """Why a node of this size and security type has no /dev/kvm, or None when it has one."""
    if security_type == "TrustedLaunch":
        return (
            f"Compute '{pool_name}' uses security type TrustedLaunch: TrustedLaunch VMs do "
            "not support nested virtualization; use security type Standard."
        )
    if not size.nested_virtualization:
        return (
            f"VM size {size.name} does not support nested virtualization; use a size "
            "that does, such as Standard_D4s_v5 or Standard_D4_v3."
        )
    return None
