from __future__ import annotations

import shlex
import subprocess

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import job_name
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.common import (
    NodeMeter,
    worker_command,
)


def test_worker_command_writes_the_script_and_runs_it(tmp_path):
    script = "import sys\nprint('worker', sys.argv[1:])\n"
    command = worker_command(script, "run-0001", ["a-WOS", "b-WOS"])
    # run it with bash as AML does, with `python` on PATH
    out = subprocess.run(
        [
            "bash",
            "-c",
            command.replace("python -u", shlex.quote(__import__("sys").executable) + " -u"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "worker ['--worker-id', 'run-0001', '--task-ids', 'a-WOS,b-WOS']"
    assert (tmp_path / "waa_worker.py").read_text() == script


def test_worker_command_refuses_a_script_containing_the_terminator():
    with pytest.raises(ValueError):
        worker_command("x = 'WAA_WORKER_PY_EOF'\n", "k", ["t"])


def test_job_names_are_valid_aml_names():
    assert job_name("Run 1/0002") == "run-1-0002"
    assert len(job_name("x" * 300)) == 255


def test_node_meter_integrates_node_count_over_time():
    readings = iter([(0, 0), (2, 2), (2, 2), (2, 0), (1, 0)])
    meter = NodeMeter(lambda: next(readings), interval=1.0)
    meter.sample(0.0)
    meter.sample(0.5)  # within the interval: not read
    meter.sample(1.0)  # 0 nodes during [0, 1]
    meter.sample(3.0)  # 2 nodes during [1, 3]
    meter.sample(4.0)  # 2 nodes during [3, 4]; now idle
    meter.sample(6.0)  # 2 nodes during [4, 6]
    assert meter.node_seconds == pytest.approx(2 * 2 + 2 * 1 + 2 * 2)
    assert meter.nodes == 1
    assert meter.idle_for(7.0) == pytest.approx(3.0)


def test_aml_estimates_the_node_time_nobody_watched():
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import NodeInterval
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import AmlTier

    tier = AmlTier(
        ml_client=None,
        compute="waa",
        environment="env",
        worker_script="",
        experiment_name="x",
        run_name="r",
        compute_details={"idle_time_before_scale_down": 10, "min_instances": 0},
    )
    jobs = [
        NodeInterval("a", 0.0, 25.0),  # ran through the kill at 20, ended at 25
        NodeInterval("b", 30.0, 40.0),  # a node acquired while nobody watched
    ]
    # 3 nodes held at 20: two idle 10 (to 30); one busy until 25, then idle, and b takes it at
    # 30 (it is idle and not yet scaled down) until 40, then idle 10, cut at the end (45).
    assert tier.unobserved_node_seconds(20.0, 45.0, 3, jobs) == 10 + 10 + 25
    tier.compute_details["min_instances"] = 1  # one node stays whatever the run does
    assert tier.unobserved_node_seconds(20.0, 45.0, 3, jobs) == 10 + 10 + 25
    tier.compute_details["min_instances"] = 0
    # A job that starts after every node scaled down counts a node of its own.
    late = [NodeInterval("a", 0.0, 25.0), NodeInterval("c", 40.0, None)]
    assert tier.unobserved_node_seconds(20.0, 45.0, 1, late) == 15 + 5


def test_aml_counts_a_node_that_runs_the_jobs_queued_ahead_once():
    """The controller was killed with 2 jobs running and 2 queued ahead of them: each queued job
    starts on the node its predecessor freed, so the gap holds 2 nodes, never 4."""
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import NodeInterval
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import AmlTier

    tier = AmlTier(
        ml_client=None,
        compute="waa",
        environment="env",
        worker_script="",
        experiment_name="x",
        run_name="r",
        compute_details={"idle_time_before_scale_down": 2, "min_instances": 0},
    )
    jobs = [
        NodeInterval("a", 0.0, 11.0),
        NodeInterval("b", 0.0, 12.0),
        NodeInterval("c", 11.1, 16.0),  # on a's node
        NodeInterval("d", 12.2, None),  # on b's node, still running at the end
    ]
    assert tier.unobserved_node_seconds(10.0, 17.0, 2, jobs) == pytest.approx(
        (17.0 - 10.0) + (17.0 - 10.0)
    )
