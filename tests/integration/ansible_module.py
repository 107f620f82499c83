"""Run one azure.azcollection module ad hoc (``ansible localhost -m ...``) against the emulator
and return its result."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_HOSTS = REPO_ROOT / "inventories" / "local" / "hosts.yml"


def run_module(
    emulator, module: str, args: str, *, check: bool = True, check_mode: bool = False
) -> dict:
    env = {
        **os.environ,
        **emulator.env,
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }
    completed = subprocess.run(
        # hosts.yml without the VM pool's azure_rm source (that plugin costs each call 3 s)
        ["ansible", "localhost", "-i", str(LOCAL_HOSTS), "-m", module, "-a", args]
        + (["--check"] if check_mode else []),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    # ansible.cfg enables profile_tasks, which prints its timings around the JSON document.
    document, _ = json.JSONDecoder().raw_decode(completed.stdout[completed.stdout.index("{") :])
    return document["plays"][0]["tasks"][0]["hosts"]["localhost"]
