"""The Batch tier's task command line with the golden image: Batch expands nothing in it, so the
task's bash must expand ``$AZ_BATCH_NODE_STARTUP_DIR`` and keep the configured folder literal;
the command is run here with bash and a worker that prints its arguments."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from types import SimpleNamespace

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.batch import (
    BatchSetupError,
    BatchTier,
    _golden_image_dir,
)

PRINT_ARGS = "import json, sys\nprint(json.dumps(sys.argv[1:]))\n"


class _Tasks:
    def __init__(self):
        self.added = []

    def add(self, job_id, task):
        self.added.append(task)


class _Jobs:
    def __init__(self):
        self.added = []

    def add(self, job):
        self.added.append(job)


def _tier(**kwargs) -> BatchTier:
    pool = SimpleNamespace(current_dedicated_nodes=0, current_low_priority_nodes=0)
    client = SimpleNamespace(
        task=_Tasks(),
        job=_Jobs(),
        pool=SimpleNamespace(get=lambda _pool: pool),
        compute_node=None,
    )
    tier = BatchTier(
        client=client, pool_id="waa", image="r.azurecr.io/winarena", worker_script=PRINT_ARGS,
        run_name="run", **kwargs,
    )  # fmt: skip
    return tier


def _job_environment(tier: BatchTier) -> dict[str, str]:
    """The environment the run's Batch job was created with (every task's worker gets it)."""
    (job,) = tier.client.job.added
    return {s.name: s.value for s in job.common_environment_settings}


def _run(command_line: str, cwd, startup_dir: str) -> list[str]:
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "AZ_BATCH_NODE_STARTUP_DIR": startup_dir,
    }
    done = subprocess.run(
        shlex.split(command_line), cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_the_worker_gets_the_start_tasks_copy_expanded_by_the_tasks_shell(tmp_path):
    tier = _tier(golden_image_dir="golden/it's here")
    tier.submit("job-1", ["t1", "t2"])
    (task,) = tier.client.task.added
    args = _run(task.command_line, tmp_path, "/mnt/batch/tasks/start up")
    assert args[-2:] == ["--golden-image-path", "/mnt/batch/tasks/start up/wd/golden/it's here"]
    assert args[:4] == ["--worker-id", "job-1", "--task-ids", "t1,t2"]
    assert "WAA_VM_BOOT" not in _job_environment(tier)


def test_without_a_golden_image_the_worker_skips_the_boot(tmp_path):
    tier = _tier()
    tier.submit("job-1", ["t1"])
    args = _run(tier.client.task.added[0].command_line, tmp_path, "/x")
    assert "--golden-image-path" not in args
    assert _job_environment(tier)["WAA_VM_BOOT"] == "0"
    turned_on = _tier(job_environment={"WAA_VM_BOOT": "1"})
    turned_on.submit("job-2", ["t1"])
    assert _job_environment(turned_on)["WAA_VM_BOOT"] == "1"


@pytest.mark.parametrize("value", ["/etc", "../up", "golden/../../x"])
def test_a_golden_image_dir_outside_the_start_task_dir_is_refused(value):
    with pytest.raises(BatchSetupError, match="relative to the start task's working directory"):
        _golden_image_dir(value)
