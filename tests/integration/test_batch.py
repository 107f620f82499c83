"""Azure Batch through the real clients: azure-mgmt-batch 17.3.0 (accounts, keys, pools with a
container configuration and a user-assigned identity) and azure-batch 14.2.0's
``BatchServiceClient`` with Shared Key (nodes, jobs, tasks whose container runs the project's
worker with the WAA stand-in, task files read by ranges, terminate)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from azure.batch import BatchServiceClient
from azure.batch import models as batch_models
from azure.batch.batch_auth import SharedKeyCredentials
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.batch import BatchManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.resource import ResourceManagementClient

REPO_ROOT = Path(__file__).resolve().parents[2]
RG, ACCOUNT, REGISTRY, LOCATION = "batch", "waabatch", "waabatchacr", "eastus"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
IMAGE = f"{REGISTRY}.azurecr.io/winarena:latest"
FAST_WAA = [
    batch_models.EnvironmentSetting(name="WAA_STANDIN_TIME_SCALE", value="0.01"),
    batch_models.EnvironmentSetting(name="HEARTBEAT_INTERVAL", value="0.5"),
    # No golden image is mounted on these pools yet (the Batch tier's mount configuration):
    # the worker leaves WAA's VM boot out.
    batch_models.EnvironmentSetting(name="WAA_VM_BOOT", value="0"),
]


def worker_command(task_ids: list[str], worker_id: str = "w0") -> str:
    script = (REPO_ROOT / "worker" / "waa_worker.py").read_text()
    return (
        f"cat > waa_worker.py <<'WAA_WORKER_EOF'\n{script}\nWAA_WORKER_EOF\n"
        f"python waa_worker.py --worker-id {worker_id} --task-ids {','.join(task_ids)} "
        "--heartbeat-interval 0.5"
    )


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class BatchWorld:
    def __init__(self, emulator):
        self.emulator = emulator
        self.sub = f"/subscriptions/{emulator.subscription_id}"
        resources = emulator.mgmt_client(ResourceManagementClient)
        resources.resource_groups.create_or_update(RG, {"location": LOCATION})
        self.mgmt = emulator.mgmt_client(BatchManagementClient)
        self.identity = resources.resources.begin_create_or_update_by_id(
            f"{self.sub}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/pool-pull",
            "2023-01-31",
            {"location": LOCATION},
        ).result()
        acr = emulator.mgmt_client(ContainerRegistryManagementClient)
        self.registry = acr.registries.begin_create(
            RG, REGISTRY, {"location": LOCATION, "sku": {"name": "Basic"}}
        ).result()
        acr.registries.begin_import_image(
            RG,
            REGISTRY,
            {
                "source": {
                    "registry_uri": "docker.io",
                    "source_image": "windowsarena/winarena:latest",
                },
                "target_tags": ["winarena:latest"],
            },
        ).result()
        account = self.mgmt.batch_account.begin_create(
            RG,
            ACCOUNT,
            {"location": LOCATION, "pool_allocation_mode": "BatchService"},
        ).result()
        self.account = account
        self.keys = self.mgmt.batch_account.get_keys(RG, ACCOUNT)
        self.client = self.data_client(self.keys.primary)

    def data_client(self, key: str) -> BatchServiceClient:
        return BatchServiceClient(
            SharedKeyCredentials(ACCOUNT, key), batch_url=f"https://{self.account.account_endpoint}"
        )

    def grant_pull(self) -> None:
        self.emulator.mgmt_client(AuthorizationManagementClient).role_assignments.create(
            self.registry.id,
            str(uuid.uuid4()),
            {
                "role_definition_id": f"{self.sub}/providers/Microsoft.Authorization/"
                f"roleDefinitions/{ACR_PULL}",
                "principal_id": self.identity.properties["principalId"],
                "principal_type": "ServicePrincipal",
            },
        )

    def pool(
        self,
        name: str = "waa",
        *,
        size: str = "Standard_D4s_v5",
        dedicated: int = 1,
        low_priority: int = 0,
        security_type: str | None = "standard",
        image_reference: dict | None = None,
        start_task: dict | None = None,
    ):
        vm = {
            "image_reference": image_reference
            or {
                "publisher": "microsoft-azure-batch",
                "offer": "ubuntu-server-container",
                "sku": "20-04-lts",
                "version": "latest",
            },
            "node_agent_sku_id": "batch.node.ubuntu 20.04",
            "container_configuration": {
                "type": "DockerCompatible",
                "container_image_names": [IMAGE],
                "container_registries": [
                    {
                        "registry_server": f"{REGISTRY}.azurecr.io",
                        "identity_reference": {"resource_id": self.identity.id},
                    }
                ],
            },
        }
        if security_type:
            vm["security_profile"] = {"security_type": security_type}
        properties = {
            "vm_size": size,
            "deployment_configuration": {"virtual_machine_configuration": vm},
            "scale_settings": {
                "fixed_scale": {
                    "target_dedicated_nodes": dedicated,
                    "target_low_priority_nodes": low_priority,
                }
            },
        }
        if start_task:
            properties["start_task"] = start_task
        return self.mgmt.pool.create(
            RG,
            ACCOUNT,
            name,
            {
                "identity": {
                    "type": "UserAssigned",
                    "user_assigned_identities": {self.identity.id: {}},
                },
                **properties,
            },
        )

    def nodes(self, pool: str = "waa") -> list:
        return list(self.client.compute_node.list(pool))

    def wait_nodes(self, state: str, count: int = 1, pool: str = "waa") -> list:
        return wait_for(
            lambda: (
                (n := [x for x in self.nodes(pool) if x.state == state]) and len(n) >= count and n
            ),
            what=f"{count} node(s) {state}",
        )

    def job(self, job_id: str = "run1", pool: str = "waa") -> None:
        self.client.job.add(
            batch_models.JobAddParameter(
                id=job_id, pool_info=batch_models.PoolInformation(pool_id=pool)
            )
        )

    def task(self, task_id: str, command: str, job_id: str = "run1", **kwargs) -> None:
        self.client.task.add(
            job_id,
            batch_models.TaskAddParameter(
                id=task_id,
                command_line=command,
                container_settings=batch_models.TaskContainerSettings(image_name=IMAGE),
                environment_settings=FAST_WAA,
                **kwargs,
            ),
        )

    def wait_task(self, task_id: str, job_id: str = "run1", timeout: float = 60):
        return wait_for(
            lambda: (t := self.client.task.get(job_id, task_id)).state == "completed" and t,
            timeout,
            f"task {task_id} completed",
        )

    def stdout(self, task_id: str, job_id: str = "run1") -> str:
        chunks = self.client.file.get_from_task(job_id, task_id, "stdout.txt")
        return b"".join(chunks).decode()


def events(text: str) -> list[dict]:
    return [json.loads(line[10:]) for line in text.splitlines() if line.startswith("WAA_EVENT ")]


@pytest.fixture
def batch(azure) -> BatchWorld:
    azure.admin("DELETE", "batch/faults")
    azure.admin("DELETE", "ml/faults")
    return BatchWorld(azure)


# -- management plane ------------------------------------------------------------------------------


def test_account_has_its_endpoint_quotas_and_regenerable_keys(batch):
    account = batch.mgmt.batch_account.get(RG, ACCOUNT)
    assert account.account_endpoint == f"{ACCOUNT}.{LOCATION}.batch.azure.com"
    assert account.pool_allocation_mode == "BatchService"
    assert account.dedicated_core_quota_per_vm_family_enforced is True
    assert any(f.name == "standardDSv5Family" for f in account.dedicated_core_quota_per_vm_family)
    old = batch.keys.primary
    new = batch.mgmt.batch_account.regenerate_key(RG, ACCOUNT, {"key_name": "Primary"})
    assert new.primary != old and new.secondary == batch.keys.secondary
    # The old key no longer authenticates; Batch's own error says why.
    with pytest.raises(batch_models.BatchErrorException) as caught:
        list(batch.data_client(old).pool.list())
    assert caught.value.error.code == "AuthenticationFailed"
    assert caught.value.response.status_code == 403
    assert list(batch.data_client(new.primary).pool.list()) == []


def test_pool_reads_back_its_container_configuration_and_security_type(batch):
    batch.grant_pull()
    batch.pool()
    pool = batch.mgmt.pool.get(RG, ACCOUNT, "waa")
    vm = pool.deployment_configuration.virtual_machine_configuration
    assert vm.container_configuration.container_image_names == [IMAGE]
    assert vm.container_configuration.container_registries[0].identity_reference.resource_id == (
        batch.identity.id
    )
    assert vm.security_profile.security_type == "standard"
    assert pool.identity.user_assigned_identities[batch.identity.id].principal_id
    assert pool.allocation_state in ("Resizing", "Steady")
    wait_for(
        lambda: batch.mgmt.pool.get(RG, ACCOUNT, "waa").allocation_state == "Steady",
        what="pool steady",
    )
    assert batch.mgmt.pool.get(RG, ACCOUNT, "waa").current_dedicated_nodes == 1


def test_bad_pools_are_refused_before_anything_is_created(batch):
    with pytest.raises(HttpResponseError) as caught:
        batch.pool(size="Standard_Z99")
    assert "vmSize" in str(caught.value)
    with pytest.raises(HttpResponseError) as caught:
        batch.pool(image_reference={"id": "/subscriptions/x/not-an-image"})
    assert "imageReference.id" in str(caught.value)
    assert list(batch.mgmt.pool.list_by_batch_account(RG, ACCOUNT)) == []


def test_quota_ends_the_resize_with_batchs_error(batch):
    batch.grant_pull()
    batch.emulator.admin(
        "PUT", f"batch/accounts/{ACCOUNT}/quota", {"families": {"standardDSv5Family": 4}}
    )
    batch.pool(dedicated=2)
    pool = wait_for(
        lambda: (p := batch.client.pool.get("waa")).allocation_state == "steady" and p,
        what="pool steady",
    )
    assert pool.current_dedicated_nodes == 1
    assert pool.resize_errors[0].code == "AccountCoreQuotaReached"
    mgmt = batch.mgmt.pool.get(RG, ACCOUNT, "waa")
    assert mgmt.resize_operation_status.errors[0].code == "AccountCoreQuotaReached"


# -- nodes and tasks --------------------------------------------------------------------------------


def test_tasks_run_the_worker_in_the_registry_image_and_logs_read_by_ranges(batch):
    batch.grant_pull()
    batch.pool()
    node = batch.wait_nodes("idle")[0]
    assert node.is_dedicated and node.vm_size == "standard_d4s_v5"
    pool = batch.client.pool.get("waa")
    assert pool.virtual_machine_configuration.container_configuration.container_image_names == [
        IMAGE
    ]
    batch.job()
    batch.task("t1", worker_command(["task-a", "task-b"]))
    task = batch.wait_task("t1")
    assert task.execution_info.exit_code == 0 and task.execution_info.result == "success"
    assert task.node_info.node_id == node.id
    full = batch.stdout("t1")
    names = [e["event"] for e in events(full)]
    assert names[0] == "started" and names[-1] == "finished"
    assert [e["task_id"] for e in events(full) if e["event"] == "task_result"] == [
        "task-a",
        "task-b",
    ]
    # Ranged reads, as the engine follows a log.
    head = b"".join(
        batch.client.file.get_from_task(
            "run1",
            "t1",
            "stdout.txt",
            file_get_from_task_options=batch_models.FileGetFromTaskOptions(ocp_range="bytes=0-99"),
        )
    )
    rest = b"".join(
        batch.client.file.get_from_task(
            "run1",
            "t1",
            "stdout.txt",
            file_get_from_task_options=batch_models.FileGetFromTaskOptions(ocp_range="bytes=100-"),
        )
    )
    assert len(head) == 100 and (head + rest).decode() == full
    props = batch.client.file.get_properties_from_task("run1", "t1", "stdout.txt", raw=True)
    assert props.headers["ocp-batch-file-isdirectory"] is False
    nodes = batch.emulator.admin("GET", "batch/nodes?pool=waa")
    assert nodes["pools"][0]["node_seconds"] > 0 and nodes["value"][0]["images"]


def test_terminate_stops_a_running_task_and_the_job(batch):
    batch.grant_pull()
    batch.pool()
    batch.wait_nodes("idle")
    batch.job()
    batch.task("sleeper", "echo started; sleep 60")
    wait_for(lambda: batch.client.task.get("run1", "sleeper").state == "running", what="running")
    batch.client.task.terminate("run1", "sleeper")
    task = batch.wait_task("sleeper")
    assert task.execution_info.failure_info.code == "TaskEnded"
    assert task.execution_info.result == "failure"
    batch.client.job.terminate("run1")
    wait_for(lambda: batch.client.job.get("run1").state == "completed", what="job completed")
    batch.wait_nodes("idle")
    batch.client.job.delete("run1")
    with pytest.raises(batch_models.BatchErrorException) as caught:
        batch.client.job.get("run1")
    assert caught.value.error.code == "JobNotFound"


def test_failed_exit_is_retried_then_reported_with_failure_info(batch):
    batch.grant_pull()
    batch.pool()
    batch.wait_nodes("idle")
    batch.job()
    batch.task(
        "fails",
        "echo oops >&2; exit 3",
        constraints=batch_models.TaskConstraints(max_task_retry_count=1),
    )
    task = batch.wait_task("fails")
    assert task.execution_info.exit_code == 3
    assert task.execution_info.retry_count == 1
    assert task.execution_info.failure_info.code == "FailureExitCode"
    stderr = b"".join(batch.client.file.get_from_task("run1", "fails", "stderr.txt")).decode()
    assert "oops" in stderr


def test_wall_clock_limit_ends_the_task(batch):
    batch.grant_pull()
    batch.pool()
    batch.wait_nodes("idle")
    batch.job()
    batch.task(
        "slow", "sleep 30", constraints=batch_models.TaskConstraints(max_wall_clock_time="PT1S")
    )
    task = batch.wait_task("slow")
    assert task.execution_info.failure_info.code == "MaxWallClockTimeExceeded"


def test_trusted_launch_pool_refuses_the_nested_windows_vm(batch):
    batch.grant_pull()
    batch.pool(security_type="trustedLaunch")
    batch.wait_nodes("idle")
    batch.job()
    batch.task("t1", worker_command(["task-a"]))
    task = batch.wait_task("t1")
    assert task.execution_info.exit_code == 1
    assert task.execution_info.failure_info.code == "FailureExitCode"
    assert "TrustedLaunch" in batch.stdout("t1") and "/dev/kvm" in batch.stdout("t1")


def test_without_acrpull_the_node_becomes_unusable(batch):
    batch.pool()
    node = batch.wait_nodes("unusable")[0]
    assert node.errors[0].code == "ContainerImagePullFailed"
    assert "AcrPull" in node.errors[0].message


def test_custom_image_holding_the_image_skips_the_pull(batch):
    batch.grant_pull()
    image_id = f"{batch.sub}/resourceGroups/{RG}/providers/Microsoft.Compute/images/waa-preloaded"
    batch.emulator.admin("PUT", "batch/preloaded-images", {"image_id": image_id, "images": [IMAGE]})
    batch.pool("baked", image_reference={"id": image_id})
    batch.pool("pulls")
    baked = batch.wait_nodes("idle", pool="baked")[0]
    pulled = batch.wait_nodes("idle", pool="pulls")[0]
    baked_start = baked.state_transition_time - baked.last_boot_time
    pull_start = pulled.state_transition_time - pulled.last_boot_time
    assert baked_start.total_seconds() < 1.0 <= pull_start.total_seconds()


def test_start_task_failure_leaves_the_node_start_task_failed(batch):
    batch.grant_pull()
    batch.emulator.admin("POST", "batch/faults", {"fault": "start_task_fails", "pool": "waa"})
    batch.pool(start_task={"command_line": "echo setup", "wait_for_success": True})
    node = batch.wait_nodes("starttaskfailed")[0]
    assert node.start_task_info.exit_code == 1
    assert node.start_task_info.failure_info.code == "FailureExitCode"


def test_low_priority_preemption_requeues_the_running_task(batch):
    batch.grant_pull()
    batch.pool(dedicated=0, low_priority=1)
    batch.wait_nodes("idle")
    batch.job()
    batch.task("long", "sleep 5; echo done")
    wait_for(lambda: batch.client.task.get("run1", "long").state == "running", what="running")
    batch.emulator.admin("POST", "batch/faults", {"fault": "preempt", "pool": "waa", "after_s": 0})
    batch.wait_nodes("preempted")
    # Where the task last ran stays known after the requeue: the node's recentTasks name it.
    wait_for(
        lambda: [
            node
            for node in batch.nodes("waa")
            if node.state == "preempted"
            and ("run1", "long") in {(t.job_id, t.task_id) for t in node.recent_tasks or []}
        ],
        what="the preempted node naming the task it ran",
    )
    task = batch.wait_task("long", timeout=90)
    assert task.execution_info.requeue_count >= 1
    assert task.execution_info.exit_code == 0


def test_node_unusable_fault_takes_the_node_out_of_scheduling(batch):
    batch.grant_pull()
    batch.pool(dedicated=1)
    batch.wait_nodes("idle")
    batch.emulator.admin("POST", "batch/faults", {"fault": "unusable", "pool": "waa", "after_s": 0})
    batch.wait_nodes("unusable")


def test_node_counts_in_azure_monitor_follow_the_nodes_states(batch):
    # Batch publishes account-wide node and core counts (no dimension, Total over a minute),
    # not per-node CPU: an unusable node shows as UnusableNodeCount.
    batch.grant_pull()
    batch.pool(dedicated=2, size="Standard_D4s_v5")
    batch.wait_nodes("idle", count=2)
    monitor = batch.emulator.mgmt_client(MonitorManagementClient)
    account = batch.account.id
    names = {d.name.value for d in monitor.metric_definitions.list(account)}
    assert {"CoreCount", "TotalNodeCount", "IdleNodeCount", "UnusableNodeCount"} <= names

    def latest() -> dict[str, float]:
        result = monitor.metrics.list(
            account,
            timespan="PT5M",
            interval=timedelta(minutes=1),
            metricnames="TotalNodeCount,IdleNodeCount,UnusableNodeCount,CoreCount",
            aggregation="Total",
        )
        return {
            m.name.value: next((p.total for p in reversed(s.data) if p.total is not None), None)
            for m in result.value
            for s in m.timeseries
        }

    counts = wait_for(lambda: (c := latest()).get("IdleNodeCount") == 2 and c, what="2 idle")
    assert counts == {
        "TotalNodeCount": 2,
        "IdleNodeCount": 2,
        "UnusableNodeCount": 0,
        "CoreCount": 8,
    }
    batch.emulator.admin("POST", "batch/faults", {"fault": "unusable", "pool": "waa", "after_s": 0})
    batch.wait_nodes("unusable")
    counts = wait_for(lambda: (c := latest())["UnusableNodeCount"] >= 1 and c, what="unusable")
    assert counts["TotalNodeCount"] == 2
    assert counts["IdleNodeCount"] + counts["UnusableNodeCount"] == 2


def test_entra_token_for_the_batch_audience_is_accepted(batch):
    token = batch.emulator.credential().get_token("https://batch.core.windows.net/.default").token
    url = f"https://{batch.account.account_endpoint}/pools?api-version=2024-02-01.19.0"
    answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["value"] == []
    wrong = batch.emulator.credential().get_token(batch.emulator.endpoint + "/.default").token
    answer = requests.get(url, headers={"Authorization": f"Bearer {wrong}"}, timeout=10)
    assert answer.status_code == 401 and answer.json()["code"] == "AuthenticationFailed"


def test_shared_workload_faults_strike_tasks_by_job_and_task_id(batch):
    batch.grant_pull()
    batch.pool()
    batch.wait_nodes("idle")
    batch.emulator.admin(
        "POST", "ml/faults", {"fault": "crash", "job": "^run1/crashes$", "after_s": 0.5}
    )
    batch.job()
    batch.task("crashes", "sleep 30")
    task = batch.wait_task("crashes")
    assert task.execution_info.exit_code == 137
    assert task.execution_info.failure_info.code == "FailureExitCode"


def test_a_fault_after_output_strikes_once_the_output_matches(batch):
    batch.grant_pull()
    batch.pool()
    batch.wait_nodes("idle")
    fault = {"fault": "crash", "job": "^run1/late$", "after_output": "^ready$", "after_s": 0}
    batch.emulator.admin("POST", "ml/faults", fault)
    batch.job()
    # Killed after "ready", never before it, and never after "done" is reached.
    batch.task("late", "echo starting; sleep 1.5; echo ready; sleep 30; echo done")
    task = batch.wait_task("late")
    assert task.execution_info.exit_code == 137
    assert (
        1.5 <= (task.execution_info.end_time - task.execution_info.start_time).total_seconds() < 30
    )


def test_deleting_pool_and_account_releases_nodes_and_drops_jobs(batch):
    batch.grant_pull()
    batch.pool()
    batch.wait_nodes("idle")
    batch.job()
    batch.mgmt.pool.begin_delete(RG, ACCOUNT, "waa").result()
    assert list(batch.mgmt.pool.list_by_batch_account(RG, ACCOUNT)) == []
    report = batch.emulator.admin("GET", "batch/nodes?pool=waa")
    assert report["value"] and all(n["released_at"] for n in report["value"])
    batch.mgmt.batch_account.begin_delete(RG, ACCOUNT).result()
    with pytest.raises(HttpResponseError) as caught:
        batch.mgmt.batch_account.get(RG, ACCOUNT)
    assert caught.value.status_code == 404
