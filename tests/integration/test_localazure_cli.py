"""`localazure env` and `localazure status` tell the truth about the state directory and port."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from localazure.testing import free_port

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localazure", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_env_without_state_fails_and_says_to_start(tmp_path):
    done = cli("--state-dir", str(tmp_path / "none"), "env", "--format", "json")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "no localazure state in" in done.stderr and "localazure start" in done.stderr


def test_env_of_a_started_emulator_names_its_secret_and_ca(emulator):
    settings = emulator.settings
    done = cli("--port", str(settings.port), "--state-dir", str(settings.state_dir), "env")
    assert done.returncode == 0, done.stderr
    assert f"REQUESTS_CA_BUNDLE={settings.ca_bundle}" in done.stdout
    assert "AZURE_SECRET=''" not in done.stdout


def test_status_of_the_running_emulator(emulator):
    settings = emulator.settings
    done = cli("--port", str(settings.port), "--state-dir", str(settings.state_dir), "status")
    assert done.returncode == 0, done.stderr


def test_status_with_another_state_directory_says_an_emulator_answers(emulator, tmp_path):
    done = cli("--port", str(emulator.settings.port), "--state-dir", str(tmp_path), "status")
    assert done.returncode == 1
    assert "a localazure answers at" in done.stderr


def test_status_on_a_port_taken_by_another_server(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        done = cli("--port", str(port), "--state-dir", str(tmp_path), "status")
    assert done.returncode == 1
    assert "taken by another server, not localazure" in done.stderr


def test_status_when_nothing_listens(tmp_path):
    done = cli("--port", str(free_port()), "--state-dir", str(tmp_path), "status")
    assert done.returncode == 3
    assert "is not running" in done.stdout
