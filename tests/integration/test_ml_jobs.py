"""Azure ML command jobs through azure-ai-ml 1.35.2 (MLClient) and raw ARM and run-history
requests: the status lifecycle, std_log through ``jobs.stream`` and run history, the real WAA
worker on synthetic tasks, cancel, timeout, image pulls from a private registry, TrustedLaunch,
every workload fault, node scale-up / reuse / scale-down with node-seconds, and a restart."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests
from azure.ai.ml import command
from azure.ai.ml.entities import AmlCompute, CommandJobLimits, Environment
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.resource import ResourceManagementClient
from monitor_helpers import wait_for

from localazure.workload.task_model import list_tasks

REPO_ROOT = Path(__file__).resolve().parents[2]
RG, WS = "ml", "evals"
WORKSPACE_API = "2024-10-01"
COMPUTE_API = "2023-08-01-preview"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
PUBLIC_WAA_IMAGE = "docker.io/windowsarena/winarena:latest"
PRIVATE_WAA_IMAGE = "openadaptevals.azurecr.io/winarena:latest"
FINAL = ("Completed", "Failed", "Canceled")


class Aml:
    """Workspace ``evals`` in group ``ml``, a fast simulated infrastructure (time scale 0.05),
    and helpers that read what a client of Azure ML can read."""

    def __init__(self, emulator):
        self.emulator = emulator
        emulator.admin("PUT", "ml/settings", {"time_scale": 0.05})
        self.sub = f"/subscriptions/{emulator.subscription_id}"
        self.resources = emulator.mgmt_client(ResourceManagementClient)
        self.resources.resource_groups.create_or_update(RG, {"location": "eastus"})
        self.workspace_id = (
            f"{self.sub}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices"
            f"/workspaces/{WS}"
        )
        workspace = self.resources.resources.begin_create_or_update_by_id(
            self.workspace_id,
            WORKSPACE_API,
            {"location": "eastus", "identity": {"type": "SystemAssigned"}},
        ).result()
        self.principal_id = workspace.identity.principal_id
        self.client = emulator.ml_client(RG, WS)
        discovery = requests.get(workspace.properties["discoveryUrl"], timeout=10).json()
        self.history_url = discovery["history"]
        self.arm = ARMPipelineClient(
            base_url=emulator.endpoint,
            policies=[
                BearerTokenCredentialPolicy(emulator.credential(), f"{emulator.endpoint}/.default")
            ],
        )

    # -- resources --------------------------------------------------------------------------------

    def cluster(self, name: str = "cpu", **settings) -> None:
        spec = {"size": "Standard_D4_v3", "max_instances": 1, "idle_time_before_scale_down": 30}
        spec.update(settings)
        self.client.compute.begin_create_or_update(AmlCompute(name=name, **spec)).result()

    def raw_cluster(self, name: str, size: str, security_type: str) -> None:
        """A cluster with a security type, which AmlCompute's SDK entity cannot express."""
        self.resources.resources.begin_create_or_update_by_id(
            f"{self.workspace_id}/computes/{name}",
            COMPUTE_API,
            {
                "location": "eastus",
                "properties": {
                    "computeType": "AmlCompute",
                    "properties": {
                        "vmSize": size,
                        "vmPriority": "Dedicated",
                        "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 1},
                        "propertyBag": {"securityType": security_type},
                    },
                },
            },
        ).result()

    def environment(self, name: str, image: str) -> None:
        self.client.environments.create_or_update(Environment(name=name, version="1", image=image))

    def submit(self, cmd: str, environment: str = "shell", compute: str = "cpu", **options) -> str:
        job = command(
            command=cmd, environment=f"azureml:{environment}:1", compute=compute, **options
        )
        return self.client.jobs.create_or_update(job).name

    # -- observation ------------------------------------------------------------------------------

    def status(self, name: str) -> str:
        status = self.client.jobs.get(name).status
        return getattr(status, "value", status)

    def wait(self, name: str, statuses: tuple[str, ...] = FINAL, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(name)
            if status in statuses:
                return status
            time.sleep(0.1)
        raise AssertionError(f"job {name} is still {status}, not in {statuses}")

    def details(self, name: str) -> dict:
        url = f"{self.history_url}/history/v1.0{self.workspace_id}/runs/{name}/details"
        response = self.arm.send_request(HttpRequest("GET", url))
        response.raise_for_status()
        return response.json()

    def log(self, name: str, log_name: str = "user_logs/std_log.txt") -> str:
        url = self.details(name)["logFiles"][log_name]
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        return response.text

    def error(self, name: str) -> tuple[str, str, str]:
        error = self.details(name)["error"]["error"]
        return error["code"], error["innerError"]["code"], error["message"]

    def nodes(self, compute: str = "cpu") -> dict:
        return self.emulator.admin("GET", f"ml/nodes?compute={compute}")

    def list_nodes(self, compute: str = "cpu") -> list[dict]:
        """Current nodes through the real listNodes API (wire fields, camelCase)."""
        request = HttpRequest(
            "POST",
            f"{self.emulator.endpoint}{self.workspace_id}/computes/{compute}/listNodes",
            params={"api-version": COMPUTE_API},
        )
        response = self.arm.send_request(request)
        response.raise_for_status()
        return response.json()["nodes"]

    def fault(self, **spec) -> None:
        self.emulator.admin("POST", "ml/faults", spec)

    # -- the WAA image in a private registry ------------------------------------------------------

    def private_waa_image(self, grant_pull: bool) -> None:
        acr = self.emulator.mgmt_client(ContainerRegistryManagementClient)
        registry = acr.registries.begin_create(
            RG, "openadaptevals", {"location": "eastus", "sku": {"name": "Basic"}}
        ).result()
        acr.registries.begin_import_image(
            RG,
            "openadaptevals",
            {
                "source": {
                    "registry_uri": "docker.io",
                    "source_image": "windowsarena/winarena:latest",
                },
                "target_tags": ["winarena:latest"],
            },
        ).result()
        if grant_pull:
            self.emulator.mgmt_client(AuthorizationManagementClient).role_assignments.create(
                registry.id,
                str(uuid.uuid4()),
                {
                    "role_definition_id": f"{self.sub}/providers/Microsoft.Authorization/"
                    f"roleDefinitions/{ACR_PULL}",
                    "principal_id": self.principal_id,
                    "principal_type": "ServicePrincipal",
                },
            )
        self.environment("waa", PRIVATE_WAA_IMAGE)


@pytest.fixture
def aml(azure) -> Aml:
    aml = Aml(azure)
    aml.cluster()
    aml.environment("shell", "docker.io/library/hello-world:latest")
    return aml


def worker_command(task_ids: list[str], worker_id: str = "w0") -> str:
    """How the project submits a worker: the script in a heredoc, then the script itself."""
    script = (REPO_ROOT / "worker" / "waa_worker.py").read_text()
    return (
        f"cat > waa_worker.py <<'WAA_WORKER_EOF'\n{script}\nWAA_WORKER_EOF\n"
        f"python waa_worker.py --worker-id {worker_id} --task-ids {','.join(task_ids)} "
        "--heartbeat-interval 1"
    )


def events(log: str) -> list[dict]:
    return [json.loads(line[10:]) for line in log.splitlines() if line.startswith("WAA_EVENT ")]


# These jobs mount no golden image: the worker leaves WAA's VM boot out (test_waa_boot.py).
FAST_WAA = {"WAA_STANDIN_TIME_SCALE": "0.01", "WAA_VM_BOOT": "0"}


# -- the lifecycle --------------------------------------------------------------------------------


def test_command_job_runs_to_completed_with_its_log_streamed(aml, capsys):
    name = aml.submit(
        "echo hello from $AZUREML_RUN_ID; echo greeting=$GREETING; sleep 1; echo done",
        environment_variables={"GREETING": "bonjour"},
    )
    assert aml.status(name) in ("NotStarted", "Queued", "Preparing", "Running")
    aml.client.jobs.stream(name)
    streamed = capsys.readouterr().out
    assert "Streaming user_logs/std_log.txt" in streamed
    assert f"hello from {name}" in streamed and "greeting=bonjour" in streamed
    assert aml.status(name) == "Completed"
    details = aml.details(name)
    assert details["status"] == "Completed" and details["error"] is None
    assert details["target"] == "cpu" and details["startTimeUtc"] and details["endTimeUtc"]
    assert aml.log(name).splitlines() == [f"hello from {name}", "greeting=bonjour", "done"]
    job = aml.client.jobs.get(name)
    assert job.services["Studio"].endpoint.startswith("https://ml.azure.com/runs/" + name)
    assert name in [j.name for j in aml.client.jobs.list()]


def test_std_log_can_be_followed_with_ranged_reads(aml):
    name = aml.submit("echo first; sleep 1; echo second")
    aml.wait(name, ("Completed",))
    url = aml.details(name)["logFiles"]["user_logs/std_log.txt"]
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.text == "first\nsecond\n"
    tail = requests.get(url, headers={"Range": "bytes=6-"}, timeout=10)
    assert tail.status_code == 206 and tail.text == "second\n"
    assert tail.headers["Content-Range"] == "bytes 6-12/13"
    nothing_new = requests.get(url, headers={"x-ms-range": "bytes=13-"}, timeout=10)
    assert nothing_new.status_code == 416
    unsigned = requests.get(url.split("?")[0], timeout=10)
    assert unsigned.status_code == 403


def test_failed_process_fails_the_job_with_its_exit_code(aml):
    name = aml.submit("echo about to fail >&2; exit 3")
    assert aml.wait(name) == "Failed"
    category, code, message = aml.error(name)
    assert (category, code) == ("UserError", "UserProcessFailed")
    assert "exited with status code 3" in message
    assert aml.log(name) == "about to fail\n"


def test_waa_worker_runs_three_synthetic_tasks_from_the_private_registry_image(aml):
    aml.private_waa_image(grant_pull=True)
    task_ids = [task_id for _, task_id in list_tasks()[:3]]
    name = aml.submit(worker_command(task_ids), environment="waa", environment_variables=FAST_WAA)
    assert aml.wait(name, timeout=60) == "Completed"
    results = [e for e in events(aml.log(name)) if e["event"] == "task_result"]
    assert [r["task_id"] for r in results] == task_ids
    assert all(r["status"] in ("success", "fail") for r in results)
    assert events(aml.log(name))[-1]["event"] == "finished"


def test_pull_without_acrpull_on_the_private_registry_fails_the_job(aml):
    aml.private_waa_image(grant_pull=False)
    name = aml.submit("echo never printed", environment="waa")
    assert aml.wait(name) == "Failed"
    category, code, message = aml.error(name)
    assert (category, code) == ("UserError", "ImagePullUnauthorized")
    assert PRIVATE_WAA_IMAGE in message and "AcrPull" in message
    assert "user_logs/std_log.txt" not in aml.details(name)["logFiles"]


def test_cancel_stops_a_running_job(aml):
    name = aml.submit("echo started; sleep 60")
    aml.wait(name, ("Running",))
    aml.client.jobs.begin_cancel(name).result()
    assert aml.status(name) in ("CancelRequested", "Canceled")
    assert aml.wait(name, timeout=10) == "Canceled"
    assert aml.details(name)["error"] is None
    assert [n["nodeState"] for n in aml.list_nodes()] == ["idle"]


def test_limits_timeout_fails_a_job_that_runs_too_long(aml):
    name = aml.submit("sleep 60", limits=CommandJobLimits(timeout=1))
    assert aml.wait(name, timeout=15) == "Failed"
    category, code, message = aml.error(name)
    assert (category, code) == ("UserError", "JobTimeout")
    assert "ran longer than the timeout of 1 seconds" in message


@pytest.mark.parametrize(
    ("size", "security_type", "reason"),
    [
        ("Standard_D4s_v5", "TrustedLaunch", "TrustedLaunch VMs do not support nested virt"),
        ("Standard_B2s", "Standard", "Standard_B2s does not support nested virtualization"),
    ],
)
def test_waa_container_fails_at_start_without_nested_virtualization(
    aml, size, security_type, reason
):
    aml.raw_cluster("nokvm", size, security_type)
    compute = aml.client.compute.get("nokvm")
    assert compute.size.lower() == size.lower()
    aml.environment("waa", PUBLIC_WAA_IMAGE)
    name = aml.submit(worker_command(["task"]), environment="waa", compute="nokvm")
    assert aml.wait(name) == "Failed"
    category, code, message = aml.error(name)
    assert (category, code) == ("UserError", "NestedVirtualizationUnavailable")
    assert "/dev/kvm not found" in message and reason in message
    log = aml.log(name)
    assert "KVM acceleration is not available" in log and reason in log


def test_a_standard_cluster_runs_the_public_waa_image(aml):
    aml.raw_cluster("withkvm", "Standard_D4s_v5", "Standard")
    aml.environment("waa", PUBLIC_WAA_IMAGE)
    task_ids = [list_tasks()[0][1]]
    name = aml.submit(
        worker_command(task_ids),
        environment="waa",
        compute="withkvm",
        environment_variables=FAST_WAA,
    )
    assert aml.wait(name, timeout=30) == "Completed"
    assert [e["task_id"] for e in events(aml.log(name)) if e["event"] == "task_result"] == task_ids


def test_invalid_submissions_are_refused_before_anything_is_created(aml):
    with pytest.raises(HttpResponseError) as err:
        aml.submit("echo hi", compute="missing")
    assert "Compute 'missing' was not found in workspace 'evals'" in err.value.message
    with pytest.raises(HttpResponseError) as err:
        aml.submit("echo hi", instance_count=2)
    assert "exactly one node" in err.value.message
    assert list(aml.client.jobs.list()) == []


# -- workload faults ------------------------------------------------------------------------------


def test_never_starts_leaves_the_job_running_without_output_until_its_timeout(aml):
    aml.fault(fault="never_starts")
    name = aml.submit("echo never printed", limits=CommandJobLimits(timeout=2))
    aml.wait(name, ("Running",))
    time.sleep(1)
    assert aml.status(name) == "Running"
    assert "user_logs/std_log.txt" not in aml.details(name)["logFiles"]
    assert "Container started" not in aml.log(name, "system_logs/lifecycler.log")
    assert aml.wait(name, timeout=10) == "Failed"
    assert aml.error(name)[1] == "JobTimeout"


def test_pull_fails_is_a_transient_image_pull_error(aml):
    aml.fault(fault="pull_fails", job="^flaky-")
    job = command(command="echo hi", environment="azureml:shell:1", compute="cpu", name="flaky-1")
    aml.client.jobs.create_or_update(job)
    assert aml.wait("flaky-1") == "Failed"
    category, code, message = aml.error("flaky-1")
    assert (category, code) == ("SystemError", "ImagePullTransientError")
    assert "503" in message and "transient" in message
    retry = command(command="echo hi", environment="azureml:shell:1", compute="cpu", name="flaky-2")
    aml.client.jobs.create_or_update(retry)
    assert aml.wait("flaky-2") == "Completed"


def test_stuck_hangs_the_waa_client_on_the_first_task(aml):
    aml.environment("waa", PUBLIC_WAA_IMAGE)
    aml.fault(fault="stuck")
    task_ids = [task_id for _, task_id in list_tasks()[:2]]
    name = aml.submit(worker_command(task_ids), environment="waa", environment_variables=FAST_WAA)
    aml.wait(name, ("Running",))
    time.sleep(2)
    assert aml.status(name) == "Running"
    seen = events(aml.log(name))
    assert [e["task_id"] for e in seen if e["event"] == "task_started"] == task_ids[:1]
    assert not [e for e in seen if e["event"] == "task_result"]
    aml.client.jobs.begin_cancel(name).result()
    assert aml.wait(name, timeout=10) == "Canceled"


def test_crash_kills_the_container_and_fails_the_job_with_its_exit_code(aml):
    aml.fault(fault="crash", after_s=0.5)
    name = aml.submit("echo working; sleep 60")
    assert aml.wait(name, timeout=10) == "Failed"
    category, code, message = aml.error(name)
    assert (category, code) == ("UserError", "UserProcessFailed")
    assert "exited with status code 137" in message
    assert aml.log(name) == "working\n"


def test_preempt_releases_the_low_priority_node_and_fails_the_job(aml):
    aml.cluster("spot", tier="low_priority")
    aml.fault(fault="preempt", after_s=0.5)
    name = aml.submit("echo working; sleep 60", compute="spot")
    assert aml.wait(name, timeout=10) == "Failed"
    category, code, message = aml.error(name)
    assert (category, code) == ("SystemError", "NodePreempted")
    assert "preempted" in message
    node = aml.nodes("spot")["value"][0]
    assert (node["state"], node["release_reason"], node["priority"]) == (
        "preempted",
        "preempted",
        "LowPriority",
    )
    assert aml.list_nodes("spot") == []


def test_slow_start_lengthens_preparing(aml):
    # 8 s longer: still Preparing a second after it was first seen, however slow the polls.
    aml.fault(fault="slow_start", delay_s=8)
    name = aml.submit("echo hi")
    aml.wait(name, ("Preparing",))
    time.sleep(1)
    assert aml.status(name) == "Preparing"
    assert aml.wait(name, timeout=40) == "Completed"


# -- nodes ----------------------------------------------------------------------------------------


def test_nodes_scale_up_are_reused_and_scale_down_after_the_idle_time(aml):
    aml.cluster("pool", max_instances=1, idle_time_before_scale_down=1)
    # Long enough that the second job is still queued when it is looked at, however loaded.
    first_job_s = 5
    first = aml.submit(f"sleep {first_job_s}", compute="pool")
    second = aml.submit("echo second", compute="pool")
    aml.wait(first, ("Running",))
    assert aml.status(second) == "Queued"
    assert len(aml.list_nodes("pool")) == 1
    assert aml.wait(second) == "Completed"
    assert "cached on the node" in aml.log(second, "system_logs/lifecycler.log")
    deadline = time.monotonic() + 10
    while aml.list_nodes("pool") and time.monotonic() < deadline:
        time.sleep(0.2)
    status = aml.client.compute.get("pool")
    assert aml.list_nodes("pool") == []
    (node,) = aml.nodes("pool")["value"]
    assert node["jobs"] == [first, second] and node["release_reason"] == "idle"
    busy = node["released_at"] - node["acquired_at"]
    assert busy >= first_job_s and node["node_seconds"] == pytest.approx(busy, abs=0.01)
    assert node["cost_usd"] == pytest.approx(node["node_seconds"] / 3600 * 0.192, rel=1e-3)
    (total,) = aml.nodes("pool")["computes"]
    assert total["nodes"] == 1 and total["active_nodes"] == 0
    assert status.provisioning_state == "Succeeded"


def test_a_second_node_is_added_up_to_the_maximum_and_quota_blocks_more(aml):
    aml.emulator.admin("PUT", "ml/quota", {"families": {"standardDv3Family": 8}})
    aml.cluster("wide", max_instances=2, idle_time_before_scale_down=1)
    aml.cluster("narrow", max_instances=1)
    # The wide cluster's jobs hold their nodes until they are cancelled below.
    names = [aml.submit("sleep 300", compute="wide") for _ in range(2)]
    for name in names:
        aml.wait(name, ("Running",))
    assert len(aml.list_nodes("wide")) == 2
    blocked = aml.submit("echo later", compute="narrow")
    narrow = f"{aml.workspace_id}/computes/narrow"

    def quota_errors():
        resource = aml.resources.resources.get_by_id(narrow, COMPUTE_API)
        return resource.properties["properties"]["errors"]

    (error,) = wait_for(quota_errors, 60, "the narrow cluster's quota error")
    assert aml.status(blocked) == "Queued"
    assert error["error"]["code"] == "QuotaExceeded"
    assert (
        "Maximum allowed: 8, Current in use: 8, Additional requested: 4"
        in (error["error"]["message"])
    )
    # Once the wide cluster scales down, the narrow one can scale up.
    for name in names:
        aml.client.jobs.begin_cancel(name).result()
    assert aml.wait(blocked, timeout=60) == "Completed"
    assert (
        aml.resources.resources.get_by_id(narrow, COMPUTE_API).properties["properties"]["errors"]
        is None
    )


# -- restart --------------------------------------------------------------------------------------


def test_state_survives_a_restart_and_running_jobs_fail_as_node_lost(aml):
    done = aml.submit("echo finished before the restart")
    aml.wait(done, ("Completed",))
    running = aml.submit("echo running; sleep 60")
    queued = aml.submit("echo ran after the restart")
    aml.wait(running, ("Running",))
    assert aml.status(queued) == "Queued"
    aml.emulator.restart()
    assert aml.status(done) == "Completed"
    assert aml.log(done) == "finished before the restart\n"
    assert aml.wait(running, timeout=5) == "Failed"
    assert aml.error(running)[:2] == ("SystemError", "NodeLost")
    assert aml.wait(queued, timeout=20) == "Completed"
    assert aml.log(queued) == "ran after the restart\n"
    assert aml.client.compute.get("cpu").max_instances == 1
    assert aml.client.environments.get("shell", "1").image.endswith("hello-world:latest")


def test_command_job_echoes_its_parent_job_name_and_compute_its_transition_time(aml):
    job_id = f"{aml.workspace_id}/jobs/child-job"
    body = {
        "properties": {
            "jobType": "Command",
            "command": "echo child",
            "environmentId": f"{aml.workspace_id}/environments/shell/versions/1",
            "computeId": f"{aml.workspace_id}/computes/cpu",
            "parentJobName": "parent-job",
        }
    }
    request = HttpRequest(
        "PUT", f"{aml.emulator.endpoint}{job_id}?api-version={COMPUTE_API}", json=body
    )
    response = aml.arm.send_request(request)
    assert response.status_code in (200, 201), response.text()
    assert response.json()["properties"]["parentJobName"] == "parent-job"
    assert aml.wait("child-job") == "Completed"
    compute = aml.resources.resources.get_by_id(f"{aml.workspace_id}/computes/cpu", COMPUTE_API)
    assert compute.properties["properties"]["allocationStateTransitionTime"].endswith("Z")
