"""The VM tier's command lines and env file: what reaches a VM's process list and what only its
stdin carries."""

from __future__ import annotations

import shlex
import subprocess
import threading
import time

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import vm
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import TierContext


def test_the_run_command_carries_no_environment_value():
    command = vm.run_command("run-1-0001", "reg.azurecr.io/winarena:latest", "python -u w.py")
    assert "--env-file" in command and "SECRET" not in command
    assert shlex.quote("python -u w.py") in command
    assert "umask 077" in command and "rm -f" in command


def test_the_env_file_is_written_0600_from_stdin_and_removed(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A docker that reports the env file's mode and content, then exits.
    (bin_dir / "docker").write_text(
        f'#!/bin/bash\nf="${{@:6:1}}"\nstat -c %a "$f"; cat "$f"; echo "$f" > {tmp_path}/seen\n'
    )
    (bin_dir / "docker").chmod(0o755)
    command = vm.run_command("c", "img", "true")
    done = subprocess.run(
        ["bash", "-c", command],
        input=vm.env_file({"OPENAI_API_KEY": "sk-canary", "HEARTBEAT_INTERVAL": "1"}),
        capture_output=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path)},
        check=True,
    )
    mode, *lines = done.stdout.decode().splitlines()
    assert mode == "600"
    assert lines == ["OPENAI_API_KEY=sk-canary", "HEARTBEAT_INTERVAL=1"]
    seen = (tmp_path / "seen").read_text().strip()
    assert not (tmp_path / seen).exists()


def test_env_file_refuses_what_docker_cannot_read():
    with pytest.raises(vm.SetupError):
        vm.env_file({"BAD NAME": "x"})
    with pytest.raises(vm.SetupError):
        vm.env_file({"KEY": "two\nlines"})


def test_following_a_log_skips_the_lines_already_read():
    assert vm.follow_command("c", 0) == "docker logs -f c 2>/dev/null"
    assert vm.follow_command("c", 12).endswith("| tail -n +13")


def test_container_names_follow_dockers_rules():
    assert vm.container_name("waa vm/run:1-0001") == "waa-vm-run-1-0001"


def test_a_pool_without_hosts_is_refused_before_anything_is_read():
    context = TierContext(
        options={
            "hosts": [],
            "pool": "p",
            "image": "i",
            "user": "u",
            "ssh_private_key_file": "k",
            "ssh_port": 22,
            "price_per_node_hour": None,
            "unreachable_after": 60,
        },
        environment={},
        run_name="r",
        worker_script="",
        state_dir=".",
    )
    with pytest.raises(vm.SetupError, match="at least one host"):
        vm.build(context)


def _argv_of(command: str, tmp_path, home: str) -> list[str]:
    """The argv ``docker`` gets when the VM's shell runs ``command`` (a docker that prints it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    (bin_dir / "docker").chmod(0o755)
    done = subprocess.run(
        ["bash", "-c", command],
        input=b"",
        capture_output=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), "HOME": home},
        check=True,
    )
    return done.stdout.decode().splitlines()


def test_the_golden_image_is_mounted_read_only_at_the_same_path_under_the_vms_home(tmp_path):
    command = vm.run_command("c", "img", "python -u w.py", "~/waa storage")
    argv = _argv_of(command, tmp_path, "/home/azure user")
    image = "/home/azure user/waa storage"
    assert argv[argv.index("-v") + 1] == f"{image}:{image}:ro"
    assert argv[argv.index("-e") + 1] == f"WAA_GOLDEN_IMAGE_PATH={image}"
    # The options come before the image; the worker's command is left to the container's shell.
    assert argv.index("img") > argv.index("-v") and argv[-3:] == ["bash", "-c", "python -u w.py"]
    absolute = _argv_of(vm.run_command("c", "img", "true", "/data/waa"), tmp_path, "/h")
    assert absolute[absolute.index("-v") + 1] == "/data/waa:/data/waa:ro"
    assert "-v" not in _argv_of(vm.run_command("c", "img", "true"), tmp_path, "/h")


@pytest.mark.parametrize("path", ["waa-storage", "/a:b", "~user/x", "/a,b", "$HOME/x"])
def test_a_golden_image_dir_docker_cannot_mount_is_refused(path):
    with pytest.raises(vm.SetupError, match="golden_image_dir"):
        vm.check_image_dir(path)
    assert vm.check_image_dir("~/waa-storage") == "~/waa-storage"
    assert vm.check_image_dir("") == ""


class _SlowDockerVm:
    """A VM's shell whose ``docker run`` takes a while: the containers it has, by name."""

    name = "vm-1"

    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.run_entered = threading.Event()
        self.release_run = threading.Event()

    def run(self, command: str, stdin: bytes = b"", timeout: float = 0) -> tuple[int, str, str]:
        words = shlex.split(command.split("docker ", 1)[1]) if "docker " in command else []
        if words[:1] == ["run"]:
            self.run_entered.set()
            self.release_run.wait(10)
            self.containers.add(words[words.index("--name") + 1])
        elif words[:2] == ["rm", "-f"]:
            self.containers.discard(words[2])
        return 0, "", ""


def _one_vm_tier(ssh) -> vm.VmTier:
    return vm.VmTier(
        hosts=[vm._Host(ssh=ssh, vm_id="/subscriptions/s/resourceGroups/g/providers/x/vm-1")],
        image="reg.azurecr.io/winarena:latest",
        worker_script="print('worker')",
        compute=None,
        reconnect_interval=0.01,
    )


def test_a_cancel_while_docker_run_is_in_flight_leaves_no_container():
    ssh = _SlowDockerVm()
    tier = _one_vm_tier(ssh)
    submit = threading.Thread(target=tier.submit, args=("run-0001", ["t1"]))
    submit.start()
    assert ssh.run_entered.wait(10)

    cancel = threading.Thread(target=tier.cancel, args=("run-0001",))
    cancel.start()
    time.sleep(0.2)  # the cancel has reached its wait for the docker run
    ssh.release_run.set()
    submit.join(10)
    cancel.join(10)

    assert ssh.containers == set()
    assert tier.status("run-0001").state.value == "CANCELED"


class _LingeringLogVm:
    """A VM whose ``docker logs -f`` of a removed container lingers until released, as when
    the tier's follower has not yet seen a cancelled container go."""

    name = "vm-1"

    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.release_log = threading.Event()

    def run(self, command: str, stdin: bytes = b"", timeout: float = 0) -> tuple[int, str, str]:
        words = shlex.split(command.split("docker ", 1)[1]) if "docker " in command else []
        if words[:1] == ["run"]:
            self.containers.add(words[words.index("--name") + 1])
        elif words[:2] == ["rm", "-f"]:
            self.containers.discard(words[2])
        elif words[:1] == ["inspect"]:
            if words[1] not in self.containers:
                return 1, "", "no such container"
            return 0, '[{"State": {"Status": "running"}}]', ""
        return 0, "", ""

    def open(self, command: str):
        vm_shell = self

        class Channel:
            def recv(self, size: int) -> bytes:
                vm_shell.release_log.wait(10)
                return b""

            def recv_exit_status(self) -> int:
                return 0

            def close(self) -> None:
                pass

        return Channel()

    def transport_active(self) -> bool:
        return True

    def close(self) -> None:
        self.release_log.set()


def test_a_job_queued_behind_a_cancelled_job_still_on_its_vm_says_it_waits_for_our_vm():
    ssh = _LingeringLogVm()
    tier = _one_vm_tier(ssh)
    tier.submit("run-0001", ["t1"])
    tier.cancel("run-0001")  # its container is gone; its follower has not seen it yet
    tier.submit("run-0002", ["t2"])
    queued = tier.status("run-0002")
    assert queued.state.value == "QUEUED" and queued.waits_for_own_node

    ssh.release_log.set()  # the follower sees the container gone and gives the VM back
    deadline = time.monotonic() + 10
    while tier.status("run-0002").state.value == "QUEUED":
        assert time.monotonic() < deadline, "the freed VM was not given to the queued job"
        time.sleep(0.01)
    tier.close()


def test_with_every_vm_unhealthy_a_queued_job_waits_for_none_of_ours():
    host = vm._Host(ssh=_LingeringLogVm(), vm_id="/subscriptions/s/x/vm-1", healthy=False)
    host.retry_at = time.time() + 3600
    tier = vm.VmTier(hosts=[host], image="i", worker_script="", compute=None)
    tier.submit("run-0001", ["t1"])
    status = tier.status("run-0001")
    assert status.state.value == "QUEUED" and not status.waits_for_own_node
