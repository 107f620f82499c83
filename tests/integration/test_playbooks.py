"""Acceptance tests of the whole job, ``ansible-playbook site.yml -e tier=aml``, run as a
subprocess the way a user runs it (cwd = the repository, the project's ansible.cfg, the default
inventory = the emulator), with the outcome read back from the emulator through the real SDKs.

One emulator serves the whole module (own port, own state directory). The tests run in the
file's order, which pytest keeps:

1. ``--check`` on an empty emulator (after a reset);
2. one full site run, shared by the provisioning, report, node-time and secret tests. It runs
   with ``-vvv`` and a canary in ``eval_secret_environment_variables``, so the secret tests
   cover both the registry layer and the whole evaluation (154 tasks) at -vvv without a run of
   their own; ``aml_cluster_idle_seconds=5`` lets the nodes scale down quickly;
3. the second run (``changed=0``, no new job) and the missing-principal playbook, against
   what the full run left.

The bad inputs are in ``test_playbook_bad_input.py`` (a worker of their own runs them alongside).
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.keyvault.secrets import SecretClient
from playbook_runner import (
    ACR_PULL,
    CLUSTER,
    HELPER_PLAYBOOKS,
    IDENTITY_API,
    NOTHING_LEFT,
    PULL_IDENTITY,
    REGISTRY,
    RG,
    RUN_NAME,
    TASK_SET,
    WORKSPACE,
    WORKSPACE_API,
    Run,
    metadata_and_token_requests,
    running_playground,
)

# Whole ansible-playbook runs: minutes each on a loaded 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

IDLE_SECONDS = 5
CANARY_NAME = "OPENAI_API_KEY"
CANARY = f"canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    with running_playground(tmp_path_factory.mktemp("playbooks")) as playground:
        yield playground


# -- 3. check mode on an empty emulator ----------------------------------------------------------


# The full run's variables: check mode is compared with it task by task.
SITE_VARIABLES = (
    "-e",
    "tier=aml",
    "-e",
    f"aml_cluster_idle_seconds={IDLE_SECONDS}",
    "-e",
    json.dumps({"eval_secret_environment_variables": {CANARY_NAME: CANARY}}),
)


@pytest.fixture(scope="module")
def empty_check_run(playground) -> Run:
    playground.reset()
    return playground.play("--check", "--diff", *SITE_VARIABLES)


def test_check_mode_on_an_empty_emulator_creates_nothing(playground, empty_check_run):
    run = empty_check_run

    assert run.returncode == 0, run.tail()
    assert run.recap()["failed"] == 0
    assert playground.leftovers() == NOTHING_LEFT
    posts = {
        r["path"]
        for r in playground.emulator.requests()
        if r["method"] == "POST" and not r["path"].startswith("/_localazure")
    }
    assert posts, "check mode made no request at all: the preflight did not run"
    unexpected = {
        p
        for p in posts
        if not p.endswith("/oauth2/v2.0/token") and not p.endswith("/checkNameAvailability")
    }
    assert not unexpected
    assert not (playground.report_dir / f"{RUN_NAME}.json").exists()
    assert not (playground.runs_dir / RUN_NAME).exists()


# -- 1. the full run -------------------------------------------------------------------------------


@dataclass
class SiteRun:
    run: Run
    report: dict
    report_text: str
    # Every file of the run's state directory (ledger, status, result) as written by the run.
    state_files: dict[str, bytes]


@pytest.fixture(scope="module")
def site_run(playground) -> SiteRun:
    playground.reset()
    run = playground.play("-vvv", *SITE_VARIABLES, timeout=900)
    assert run.returncode == 0, run.tail()
    report_path = playground.report_dir / f"{RUN_NAME}.json"
    assert report_path.is_file(), run.tail()
    report_text = report_path.read_text()
    state_dir = playground.runs_dir / RUN_NAME
    state_files = {
        str(path.relative_to(state_dir)): path.read_bytes()
        for path in sorted(state_dir.rglob("*"))
        if path.is_file()
    }
    return SiteRun(run, json.loads(report_text), report_text, state_files)


def test_full_run_creates_the_registry_the_image_and_the_acr_pull_grants(playground, site_run):
    assert site_run.run.recap()["failed"] == 0

    group = playground.resources.resource_groups.get(RG)
    assert group.location == "eastus"
    registry = playground.registries.registries.get(RG, REGISTRY)
    assert registry.id.lower() == playground.registry_id().lower()
    assert (registry.sku.name, registry.admin_user_enabled) == ("Basic", False)
    assert registry.login_server == f"{REGISTRY}.azurecr.io"

    data_plane = ContainerRegistryClient(
        f"https://{registry.login_server}",
        playground.emulator.credential(),
        audience="https://management.azure.com",
    )
    assert "winarena" in list(data_plane.list_repository_names())
    tag = data_plane.get_tag_properties("winarena", "latest")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", tag.digest)
    assert data_plane.get_manifest_properties("winarena", tag.digest).digest == tag.digest

    identity = playground.resources.resources.get_by_id(
        f"{group.id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{PULL_IDENTITY}",
        IDENTITY_API,
    )
    workspace = playground.resources.resources.get_by_id(
        f"{group.id}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}",
        WORKSPACE_API,
    )
    assert workspace.identity.type == "SystemAssigned"
    # atScope() also lists what is inherited (the development principal's Owner).
    granted = {
        (role, principal)
        for scope, role, principal in playground.role_assignments(registry.id)
        if scope.lower() == registry.id.lower()
    }
    assert granted == {
        (ACR_PULL, identity.properties["principalId"]),
        (ACR_PULL, workspace.identity.principal_id),
    }
    # The subscription-wide listing (what "nothing created" relies on) sees them too.
    assert {(a[1], a[2]) for a in playground.role_assignments()} >= granted

    cluster = playground.ml.compute.get(CLUSTER)
    assert cluster.size.lower() == "standard_d4s_v5"
    assert (cluster.min_instances, cluster.max_instances) == (0, 10)
    environment = playground.ml.environments.get("waa", "1")
    assert environment.image == f"{REGISTRY}.azurecr.io/winarena:latest"


def _job_task_ids(job) -> list[str]:
    """The task ids of a job, from its command (``... waa_worker.py ... --task-ids a,b,c``)."""
    argv = shlex.split(job.command.strip().splitlines()[-1])
    return argv[argv.index("--task-ids") + 1].split(",")


def test_full_run_report_has_every_task_once_and_agrees_with_the_jobs(playground, site_run):
    expected = {task for tasks in json.loads(TASK_SET.read_text()).values() for task in tasks}
    evaluation = site_run.report["evaluation"]
    assert len(expected) == 154
    assert (site_run.report["failed"], evaluation["status"]) == (False, "completed")
    assert evaluation["total_tasks"] == 154
    assert set(evaluation["tasks"]) == expected
    assert all(t["status"] in ("success", "fail") for t in evaluation["tasks"].values())
    assert evaluation["succeeded"] + evaluation["failed"] == 154

    jobs = playground.jobs()
    assert evaluation["jobs_submitted"] > 0
    assert len(jobs) == evaluation["jobs_submitted"]
    completed = {job.name: _job_task_ids(job) for job in jobs if job.status == "Completed"}
    in_completed_jobs = Counter(task for tasks in completed.values() for task in tasks)
    assert {task: in_completed_jobs[task] for task in expected} == dict.fromkeys(expected, 1)
    assert set(in_completed_jobs) == expected
    for task_id, result in evaluation["tasks"].items():
        job = re.sub(r"[^A-Za-z0-9_-]", "-", result["job_key"]).lower()
        assert task_id in completed.get(job, []), (task_id, result["job_key"])


def test_check_mode_on_an_empty_emulator_changes_the_tasks_the_real_run_changes(
    empty_check_run, site_run
):
    real = site_run.run.changed_tasks()
    assert len(real) >= 9, real
    assert empty_check_run.changed_tasks() == real


def test_check_mode_on_a_complete_emulator_changes_nothing(playground, site_run):
    # The settings of the full run (its idle time), or check mode rightly reports the change.
    run = playground.play(
        "--check", "--diff", "-e", "tier=aml", "-e", f"aml_cluster_idle_seconds={IDLE_SECONDS}"
    )

    assert run.returncode == 0, run.tail()
    assert run.changed_tasks() == set(), run.tail()
    assert run.recap()["changed"] == 0


def test_report_and_summary_agree_with_the_ledger_and_are_written_once(playground, site_run):
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger

    with Ledger(playground.runs_dir / RUN_NAME / "ledger.sqlite3") as ledger:
        recorded = ledger.results()
    evaluation = site_run.report["evaluation"]
    assert {t: (r["status"], r["score"]) for t, r in evaluation["tasks"].items()} == {
        t: (r.status, r.score) for t, r in recorded.items()
    }
    counts = Counter(r.status for r in recorded.values())
    assert (evaluation["succeeded"], evaluation["failed"], evaluation["errored"]) == (
        counts["success"],
        counts["fail"],
        counts["error"],
    )
    domains = Counter(r.domain for r in recorded.values())
    assert {d: v["total"] for d, v in evaluation["domains"].items()} == dict(domains)

    # The summary, printed once, says what the ledger says.
    stdout = site_run.run.stdout
    assert stdout.count(f"WAA evaluation {RUN_NAME} on aml: completed") == 1, stdout[-3000:]
    assert (
        stdout.count(
            f"tasks {len(recorded)}: {counts['success']} succeeded, {counts['fail']} failed, "
            f"{counts['error']} errors, 0 without a result"
        )
        == 1
    )
    assert stdout.count(f"report: {playground.report_dir / RUN_NAME}.json") == 1


def test_full_run_node_hours_agree_with_the_emulator_nodes(playground, site_run):
    deadline = time.monotonic() + IDLE_SECONDS + 90
    nodes = playground.cluster_nodes()
    while nodes["active_nodes"] and time.monotonic() < deadline:
        time.sleep(1)
        nodes = playground.cluster_nodes()
    assert nodes["active_nodes"] == 0, f"the nodes did not scale down: {nodes}"

    measured = site_run.report["evaluation"]["cost"]["node_hours"]
    actual = nodes["node_seconds"] / 3600
    assert actual > 0
    assert abs(measured - actual) <= 0.10 * actual, f"report {measured} h, nodes {actual} h"


# -- 5. no secret in any output --------------------------------------------------------------------


def _places(site_run: SiteRun) -> dict[str, bytes]:
    return {
        "stdout": site_run.run.stdout.encode(),
        "stderr": site_run.run.stderr.encode(),
        "report": site_run.report_text.encode(),
        **{f"state {name}": data for name, data in site_run.state_files.items()},
    }


def test_the_canary_secret_reaches_the_jobs_and_no_output(playground, site_run):
    # It was passed on through the workspace's Key Vault: the jobs name the secret, never hold it.
    job = playground.ml.jobs.get(playground.jobs()[0].name)
    assert CANARY_NAME not in job.environment_variables
    names = json.loads(job.environment_variables["WAA_SECRET_NAMES"])
    vault = SecretClient(
        job.environment_variables["WAA_SECRETS_VAULT_URL"], playground.emulator.credential()
    )
    assert vault.get_secret(names[CANARY_NAME]).value == CANARY
    assert {"ledger.sqlite3", "status.json", "result.json"} <= set(site_run.state_files)
    leaks = [place for place, data in _places(site_run).items() if CANARY.encode() in data]
    assert leaks == []


def test_the_emulator_client_secret_appears_in_no_output(playground, site_run):
    secret = playground.client_secret.encode()
    assert len(secret) >= 16
    leaks = [place for place, data in _places(site_run).items() if secret in data]
    assert leaks == []


# -- 2. the second run -----------------------------------------------------------------------------


# A no-op re-run's cloud metadata and Entra token requests (token and OpenID discovery). Measured
# on the registry and AML layers without secrets: 38 and 30 (52 and 34 before acr_pull took its
# caller's registry and azure-ai-ml's custom cloud was registered once per process); this run's
# Key Vault tasks add about 4 module processes (one metadata read, a token and a discovery each).
# The golden image layer (in tier=aml since issue 9) brought the tokens to 49 (CI, 2026-12-01):
# its storage modules authenticate to ARM and to Blob storage each; metadata fell to 33.
NOOP_METADATA_REQUESTS = 44
NOOP_TOKEN_REQUESTS = 52


def test_second_run_changes_nothing_and_submits_no_job(playground, site_run):
    jobs_before = {job.name for job in playground.jobs()}
    nodes_before = playground.cluster_nodes()["nodes"]
    seq_before = playground.emulator.request_seq()

    run = playground.play("-e", "tier=aml", "-e", f"aml_cluster_idle_seconds={IDLE_SECONDS}")

    assert run.returncode == 0, run.tail()
    recap = run.recap()
    assert (recap["changed"], recap["failed"], recap["unreachable"]) == (0, 0, 0), run.tail()
    metadata, tokens = metadata_and_token_requests(playground.requests_since(seq_before))
    assert metadata <= NOOP_METADATA_REQUESTS and tokens <= NOOP_TOKEN_REQUESTS, (
        f"{metadata} metadata and {tokens} token requests in a no-op re-run"
    )
    assert {job.name for job in playground.jobs()} == jobs_before
    assert playground.cluster_nodes()["nodes"] == nodes_before
    report = json.loads((playground.report_dir / f"{RUN_NAME}.json").read_text())
    # The report is the whole run's: the first session's jobs, none added by this one.
    assert report["evaluation"]["session_jobs_submitted"] == 0
    assert report["evaluation"]["jobs_submitted"] == site_run.report["evaluation"]["jobs_submitted"]
    assert report["evaluation"]["sessions"] == 2
    assert set(report["evaluation"]["tasks"]) == set(site_run.report["evaluation"]["tasks"])


# -- 4. a principal that does not exist --------------------------------------------------------


def test_acr_pull_for_a_missing_principal_fails_clearly_and_grants_nothing(playground, site_run):
    before = playground.role_assignments()
    missing = str(uuid.uuid4())

    run = playground.play(
        "-e",
        f"acr_pull_missing_principal_id={missing}",
        playbook=HELPER_PLAYBOOKS / "acr_pull_missing_principal.yml",
    )

    assert run.returncode != 0, run.tail()
    assert run.recap()["failed"] == 1
    assert "PrincipalNotFound" in run.output, run.tail()
    assert "Check that you have the correct principal ID" in run.output, run.tail()
    after = playground.role_assignments()
    assert after == before
    assert missing not in {principal for _, _, principal in after}
