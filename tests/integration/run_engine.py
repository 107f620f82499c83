"""A controller in a process of its own, for the tests that interrupt or kill one: runs the
evaluation engine on the AML tier against the emulator named by the environment.

    python run_engine.py '<json>'

The JSON holds ``resource_group``, ``workspace``, ``compute``, ``environment``, ``run_name``,
``ledger``, ``tasks`` ([[domain, task_id], ...]), ``job_environment``, ``golden_image`` (the job
input's URI), ``engine`` (keyword
arguments of EngineConfig) and optionally ``go_file``: with it, the controller connects, prints
``ready`` and starts the run only once that file exists. On completion it prints the run's
summary as one JSON line and exits 0; interrupted (Ctrl-C), it exits 130 after the engine
cancelled its jobs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO_ROOT / "collections"), str(REPO_ROOT)]

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (  # noqa: E402
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import (  # noqa: E402
    AmlTier,
)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    tier = AmlTier.from_environment(
        dict(os.environ),
        resource_group=spec["resource_group"],
        workspace=spec["workspace"],
        compute=spec["compute"],
        environment=spec["environment"],
        experiment_name="waa-integration",
        worker_script=(REPO_ROOT / "worker" / "waa_worker.py").read_text(),
        run_name=spec["run_name"],
        job_environment=spec.get("job_environment") or {},
        node_sample_interval=0.2,
        golden_image=spec.get("golden_image") or "",
    )
    config = EngineConfig(
        price_per_node_hour=tier.price_per_node_hour, run_id=spec["run_name"], **spec["engine"]
    )
    engine = EvaluationEngine(tier, [tuple(t) for t in spec["tasks"]], spec["ledger"], config)
    if spec.get("go_file"):
        print("ready", flush=True)
        while not Path(spec["go_file"]).exists():
            time.sleep(0.05)
    print("engine started", flush=True)
    try:
        result = engine.run()
    except KeyboardInterrupt:
        print(json.dumps({"status": "cancelled"}), flush=True)
        return 130
    summary = {
        "status": result.status,
        "tasks": len(result.tasks),
        "jobs_submitted": result.jobs_submitted,
        "duplicates_ignored": result.duplicates_ignored,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
