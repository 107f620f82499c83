"""Bad input to ``ansible-playbook site.yml -e tier=aml``: each case fails with the fix before
anything is created. The cases run together (4 at a time) against one fresh emulator: the union
of what they left is checked to be empty (no resource, no write request at all), which holds for
each.

Wrong credentials: ``playbooks/azure_endpoint.yml`` fills ``azure_environment`` from
``localazure env`` as a whole, so one key of it cannot be overridden with ``-e``. That case runs
with ``-e azure_use_emulator=false`` (the endpoint play then reads nothing, and the plays'
``environment`` is empty) and the emulator's client environment exported by the caller with a
wrong ``AZURE_SECRET``/``AZURE_CLIENT_SECRET``: exactly how a real-Azure user supplies
credentials.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from playbook_runner import HELPER_PLAYBOOKS, NOTHING_LEFT, Run, running_playground

from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    with running_playground(tmp_path_factory.mktemp("bad-input")) as playground:
        yield playground


# -- bad input ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    args: tuple[str, ...]
    # Phrases of the error message that say what to do.
    phrases: tuple[str, ...]


WRONG_SECRET = f"wrong-secret-{uuid.uuid4().hex}"
OTHER_TASKS_RUN = "waa-other-tasks"
BAD_INPUTS = {
    "invalid-registry-name": BadInput(
        ("-e", "acr_name=bad-name!"),
        ("'bad-name!' is not a valid registry name", "use 5 to 50 letters and digits"),
    ),
    "unknown-sku": BadInput(
        ("-e", "acr_sku=Gold"), ("acr_sku 'Gold' is unknown", "use Basic, Standard or Premium")
    ),
    "unknown-location": BadInput(
        ("-e", "acr_location=atlantis"),
        ("'atlantis' is not a region of this subscription", "use one of: eastus"),
    ),
    "missing-source-image": BadInput(
        ("-e", json.dumps({"acr_images": [{"source": "docker.io/windowsarena/nope:latest"}]})),
        ("source image not found: docker.io/windowsarena/nope:latest", "check the name"),
    ),
    "trusted-launch": BadInput(
        ("-e", "aml_cluster_security_type=TrustedLaunch"),
        ("TrustedLaunch cannot run the WAA container", "Use security_type: Standard"),
    ),
    "no-nested-virtualization": BadInput(
        ("-e", "aml_cluster_size=Standard_B2s"),
        ("Standard_B2s does not support nested virtualization", "such as Standard_D4s_v5"),
    ),
    "quota-shortfall": BadInput(
        ("-e", "aml_cluster_max_nodes=500"),
        ("needs 2000 vCPUs", "Lower max_instances to 125", "request a quota increase"),
    ),
    "missing-task-set": BadInput(
        ("-e", "eval_task_set=/nonexistent/test_all.json"),
        ("eval_task_set: /nonexistent/test_all.json does not exist", "nothing was created"),
    ),
    "malformed-task-set": BadInput(
        ("-e", f"eval_task_set={HELPER_PLAYBOOKS / 'malformed_task_set.json'}"),
        ("eval_task_set:", "is not valid JSON"),
    ),
    "unknown-task-id": BadInput(
        ("-e", json.dumps({"eval_task_ids": ["no-such-task-WOS"]})),
        ("eval_task_ids: not in", "no-such-task-WOS"),
    ),
    "zero-workers": BadInput(
        ("-e", "eval_workers=0", "-e", "aml_cluster_max_nodes=2"),
        ("eval_workers is 0; it must be at least 1",),
    ),
    "zero-startup-timeout": BadInput(
        ("-e", "eval_startup_timeout=0"),
        ("eval_startup_timeout is 0; it must be more than 0",),
    ),
    "wrong-credentials": BadInput(
        ("-e", "azure_use_emulator=false"),
        ("Invalid client secret provided", "is the client secret value"),
    ),
    # A ledger (made below) of an earlier run of the same name with other tasks.
    "ledger-of-other-tasks": BadInput(
        ("-e", f"eval_run_name={OTHER_TASKS_RUN}", "-e", "eval_max_tasks=3"),
        ("with other tasks", "Run it again with its settings to resume it", "nothing was created"),
    ),
}


@dataclass
class BadInputRuns:
    runs: dict[str, Run]
    leftovers: dict[str, list]


@pytest.fixture(scope="module")
def bad_input_runs(playground):
    playground.reset()
    ledger_path = playground.runs_dir / OTHER_TASKS_RUN / "ledger.sqlite3"
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    with Ledger(ledger_path) as ledger:
        ledger.init_run(OTHER_TASKS_RUN, "earlier", time.time(), selection="of-other-tasks")
    # The wrong credentials come from the caller's environment (see the module docstring).
    wrong_credentials = {
        **playground.emulator.env,
        "AZURE_SECRET": WRONG_SECRET,
        "AZURE_CLIENT_SECRET": WRONG_SECRET,
    }

    def run(name: str) -> Run:
        case = BAD_INPUTS[name]
        if name == "wrong-credentials":
            return playground.play(
                "-e",
                "tier=aml",
                "-e",
                f"azure_subscription_id={playground.emulator.subscription_id}",
                *case.args,
                env=wrong_credentials,
            )
        return playground.play("-e", "tier=aml", *case.args)

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(BAD_INPUTS, pool.map(run, BAD_INPUTS), strict=True))
    return BadInputRuns(runs, playground.leftovers())


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_fails_with_the_fix_before_anything_is_created(bad_input_runs, name):
    run = bad_input_runs.runs[name]

    assert run.returncode != 0, run.tail()
    assert run.recap()["failed"] == 1, run.tail()
    for phrase in BAD_INPUTS[name].phrases:
        assert phrase in run.output, f"{phrase!r} is not in the error:\n{run.tail()}"
    assert WRONG_SECRET not in run.output
    # Nothing half-made by any of the runs (the union of what they left is empty).
    assert bad_input_runs.leftovers == NOTHING_LEFT
