"""Compute and Network through the real SDKs, and the VMs through real SSH (paramiko): create
the network and a VM with an SSH key, reach it on its 127.x public IP, run its custom data, log
in to the registry with its managed identity, ``docker pull`` and ``docker run`` the WAA image
with the project's worker, and read the worker's events; power actions, node time, NSG rules,
quota, security type, faults and delete."""

from __future__ import annotations

import ipaddress
import json
import shlex
import time
from datetime import timedelta

import paramiko
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.monitor import MonitorManagementClient

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.common import (
    worker_command,
)
from tests.integration.aml_setup import FAST_JOB_ENV, WORKER_SCRIPT
from tests.integration.vm_setup import (
    LOCATION,
    RG,
    build,
    docker_login_with_identity,
    new_key,
    run,
    wait_for,
)

pytestmark = pytest.mark.integration

TASKS = ["notepad_1", "chrome_2"]


@pytest.fixture
def world(azure):
    return build(azure)


def _worker(container: str, tasks=TASKS) -> str:
    # No golden image is copied onto these VMs yet (the VM tier's job): no VM boot.
    env = " ".join(f"-e {k}={v}" for k, v in {**FAST_JOB_ENV, "WAA_VM_BOOT": "0"}.items())
    command = worker_command(WORKER_SCRIPT.read_text(), container, tasks)
    return f"docker run -d --name {container} {env} vmevals.azurecr.io/winarena:latest bash -c {shlex.quote(command)}"


def _events(log: str) -> list[dict]:
    return [
        json.loads(line.split(" ", 1)[1])
        for line in log.splitlines()
        if line.startswith("WAA_EVENT ")
    ]


def test_vm_over_ssh_runs_the_worker_from_the_registry(world, azure):
    vm = world.vm("vm1", custom_data="#!/bin/bash\necho first boot > $HOME/booted.txt\n")
    assert vm.provisioning_state == "Succeeded"
    assert vm.storage_profile.image_reference.exact_version.startswith("22.04")
    pip = world.network.public_ip_addresses.get(RG, "vm1-ip")
    assert ipaddress.ip_address(pip.ip_address) in ipaddress.ip_network("127.0.0.0/8")
    nic = world.network.network_interfaces.get(RG, "vm1-nic")
    assert nic.virtual_machine.id.lower() == vm.id.lower()
    assert ipaddress.ip_address(
        nic.ip_configurations[0].private_ip_address
    ) in ipaddress.ip_network("10.1.0.0/24")
    wait_for(lambda: world.power_state("vm1") == "running", "vm1 running")
    client = world.ssh_ready("vm1")
    host_key = client.get_transport().get_remote_server_key()
    code, out, _ = run(client, "pwd; python3 -c 'print(40 + 2)'; command -v docker")
    assert code == 0, out
    lines = out.split()
    assert lines[1] == "42" and lines[2].endswith("/bin/docker")
    wait_for(lambda: run(client, "cat booted.txt")[1].strip() == "first boot", "custom data")

    code, out, err = run(client, docker_login_with_identity(world))
    assert code == 0 and "Login Succeeded" in out, err
    code, out, err = run(client, "docker pull vmevals.azurecr.io/winarena:latest")
    assert code == 0 and "Downloaded newer image" in out, err
    code, out, _ = run(client, "docker pull vmevals.azurecr.io/winarena:latest")
    assert "Image is up to date" in out
    code, out, err = run(client, _worker("w1"))
    assert code == 0, err

    def finished():
        log = run(client, "docker logs w1")[1]
        return log if any(e["event"] == "finished" for e in _events(log)) else None

    events = _events(wait_for(finished, "worker finished", timeout=60))
    assert [e["task_id"] for e in events if e["event"] == "task_result"] == TASKS
    code, out, _ = run(client, "docker ps -a")
    assert "Exited (0)" in out
    # A second host key check: the VM keeps its own host key across connections.
    again = world.connect("vm1")
    assert again.get_transport().get_remote_server_key() == host_key
    again.close()
    client.close()

    # Deallocate: SSH goes, node time stops; the disk (and its image cache) survives.
    world.compute.virtual_machines.begin_deallocate(RG, "vm1").result()
    wait_for(lambda: world.power_state("vm1") == "deallocated", "vm1 deallocated")
    with pytest.raises((OSError, paramiko.SSHException)):
        world.connect("vm1")
    nodes = azure.admin("GET", "compute/nodes?vm=vm1")
    assert nodes["value"] and all(n["released_at"] is not None for n in nodes["value"])
    seconds = nodes["vms"][0]["node_seconds"]
    time.sleep(0.5)
    assert azure.admin("GET", "compute/nodes?vm=vm1")["vms"][0]["node_seconds"] == seconds
    world.compute.virtual_machines.begin_start(RG, "vm1").result()
    client = world.ssh_ready("vm1")
    code, out, _ = run(client, "docker pull vmevals.azurecr.io/winarena:latest; cat booted.txt")
    assert "Image is up to date" in out and "first boot" in out
    client.close()

    # Delete: NIC, public IP and disk go with it (deleteOption Delete).
    world.compute.virtual_machines.begin_delete(RG, "vm1").result()
    names = {r.name for r in world.network.network_interfaces.list(RG)}
    assert "vm1-nic" not in names
    assert "vm1-ip" not in {p.name for p in world.network.public_ip_addresses.list(RG)}
    assert not list(world.compute.disks.list_by_resource_group(RG))


def test_only_the_vm_key_and_admin_user_get_in(world):
    world.vm("vm2")
    world.ssh_ready("vm2").close()
    other, _ = new_key()
    with pytest.raises(paramiko.AuthenticationException):
        world.connect("vm2", key=other)
    with pytest.raises(paramiko.AuthenticationException):
        world.connect("vm2", user="root")


def test_nsg_decides_whether_ssh_is_accepted(world):
    world.ssh_rule("203.0.113.0/24")
    world.vm("vm3")
    wait_for(lambda: world.power_state("vm3") == "running", "vm3 running")
    time.sleep(0.5)
    with pytest.raises((OSError, paramiko.SSHException)):
        world.connect("vm3")
    world.ssh_rule("127.0.0.1/32")
    world.ssh_ready("vm3").close()


def test_waa_refuses_to_start_on_trusted_launch(world):
    world.vm("vm4", security_type="TrustedLaunch")
    client = world.ssh_ready("vm4")
    run(client, docker_login_with_identity(world))
    code, out, err = run(client, _worker("w4") + " && sleep 1 && docker wait w4 && docker logs w4")
    assert "TrustedLaunch" in out and "KVM acceleration is not available" in out, (out, err)
    client.close()


def test_pull_without_acr_pull_is_refused(azure):
    world = build(azure, acr_pull=False)
    world.vm("vm5")
    client = world.ssh_ready("vm5")
    run(client, docker_login_with_identity(world))
    code, _, err = run(client, "docker pull vmevals.azurecr.io/winarena:latest")
    assert code != 0 and "AcrPull" in err
    client.close()


def test_core_quota_is_azures_error(world, azure):
    azure.admin("PUT", "ml/quota", {"families": {"standardDSv5Family": 4}})
    world.vm("vm6")
    with pytest.raises(HttpResponseError) as err:
        world.vm("vm7")
    assert err.value.error.code == "OperationNotAllowed"
    assert "exceeding approved standardDSv5Family Cores quota" in err.value.message
    assert "vm7" not in {v.name for v in world.compute.virtual_machines.list(RG)}


def test_ssh_dropped_mid_run_keeps_the_container(world, azure):
    world.vm("vm8")
    client = world.ssh_ready("vm8")
    run(client, docker_login_with_identity(world))
    run(client, _worker("w8", ["notepad_1", "chrome_2", "vscode_3"]))
    azure.admin("POST", "compute/faults", {"fault": "ssh_drop", "vm": "vm8"})
    wait_for(lambda: not client.get_transport().is_active(), "connection dropped")
    client = world.ssh_ready("vm8")

    def finished():
        log = run(client, "docker logs w8")[1]
        return log if any(e["event"] == "finished" for e in _events(log)) else None

    events = _events(wait_for(finished, "worker finished", timeout=60))
    assert len([e for e in events if e["event"] == "task_result"]) == 3
    client.close()


def test_eviction_kills_the_worker_and_stops_node_time(world, azure):
    world.vm("vm9")
    client = world.ssh_ready("vm9")
    run(client, docker_login_with_identity(world))
    run(client, "docker run -d --name long vmevals.azurecr.io/winarena:latest sleep 600")
    azure.admin("POST", "compute/faults", {"fault": "evict", "vm": "vm9"})
    wait_for(lambda: world.power_state("vm9") == "deallocated", "vm9 evicted")
    nodes = azure.admin("GET", "compute/nodes?vm=vm9")["value"]
    assert nodes[-1]["release_reason"] == "preempted"
    world.compute.virtual_machines.begin_start(RG, "vm9").result()
    client = world.ssh_ready("vm9")
    assert "Exited (137)" in run(client, "docker ps -a")[1]
    client.close()


def test_image_captured_from_a_generalized_vm(world):
    world.vm("src")
    client = world.ssh_ready("src")
    run(client, "echo from-image > marker.txt")
    client.close()
    with pytest.raises(HttpResponseError) as err:
        world.compute.images.begin_create_or_update(
            RG,
            "golden",
            {"location": "eastus", "source_virtual_machine": {"id": _vm_id(world, "src")}},
        ).result()
    assert err.value.error.code == "OperationNotAllowed"
    world.compute.virtual_machines.begin_deallocate(RG, "src").result()
    world.compute.virtual_machines.generalize(RG, "src")
    image = world.compute.images.begin_create_or_update(
        RG, "golden", {"location": "eastus", "source_virtual_machine": {"id": _vm_id(world, "src")}}
    ).result()
    assert image.storage_profile.os_disk.os_state == "Generalized"
    with pytest.raises(HttpResponseError):
        world.compute.virtual_machines.begin_start(RG, "src").result()
    world.vm("copy", image={"id": image.id})
    client = world.ssh_ready("copy")
    assert run(client, "cat marker.txt")[1].strip() == "from-image"
    client.close()


def _vm_id(world, name: str) -> str:
    return world.compute.virtual_machines.get(RG, name).id


def test_container_faults_ssh_refused_and_vm_deleted_under_a_worker(world, azure):
    world.vm("vm10")
    client = world.ssh_ready("vm10")
    run(client, docker_login_with_identity(world))
    azure.admin("POST", "ml/faults", {"fault": "crash", "job": "^crashy$", "after_s": 0.2})
    azure.admin("POST", "ml/faults", {"fault": "never_starts", "job": "^silent$"})
    image = "vmevals.azurecr.io/winarena:latest"
    run(
        client,
        f"docker run -d --name crashy {image} sleep 60; docker run -d --name silent {image} echo hi",
    )
    assert run(client, "docker wait crashy")[1].strip() == "137"
    time.sleep(0.5)
    code, out, _ = run(client, "docker logs silent; docker ps")
    assert "hi" not in out and "silent" in out
    client.close()

    azure.admin("POST", "compute/faults", {"fault": "ssh_refused", "vm": "^vm10$", "duration_s": 2})
    wait_for(lambda: _refused(world, "vm10"), "SSH refused")
    client = world.ssh_ready("vm10")
    run(client, "docker run -d --name long " + image + " sleep 600")
    azure.admin("POST", "compute/faults", {"fault": "delete", "vm": "^vm10$"})
    wait_for(
        lambda: "vm10" not in {v.name for v in world.compute.virtual_machines.list(RG)},
        "vm10 deleted",
    )
    wait_for(lambda: not client.get_transport().is_active(), "session ended with the VM")
    nodes = azure.admin("GET", "compute/nodes?vm=vm10")["value"]
    assert nodes and all(n["released_at"] is not None for n in nodes)


def _refused(world, name: str) -> bool:
    try:
        world.connect(name).close()
    except paramiko.ssh_exception.NoValidConnectionsError:
        # What paramiko raises when the TCP connection is refused.
        return True
    except (OSError, EOFError, paramiko.SSHException):
        return False
    return False


def test_vm_host_metrics_through_azure_monitor(world, azure):
    # Per VM (metrics.list on its id) and for the pool in one multi-resource query at
    # subscription scope, split by Microsoft.ResourceId, limited by the filter and by top.
    ids = [world.vm(name).id for name in ("m1", "m2", "m3")]
    for name in ("m1", "m2", "m3"):
        wait_for(lambda name=name: world.power_state(name) == "running", f"{name} running")
    monitor = azure.mgmt_client(MonitorManagementClient)
    names = {d.name.value for d in monitor.metric_definitions.list(ids[0])}
    assert names == {"Percentage CPU", "Available Memory Percentage"}

    def points(result):
        return {
            next(m.value for m in s.metadatavalues if m.name.value == "Microsoft.ResourceId"): [
                p.average for p in s.data if p.average is not None
            ]
            for m in result.value
            for s in m.timeseries
        }

    def pool(**extra):
        return monitor.metrics.list_at_subscription_scope(
            LOCATION,
            metricnamespace="Microsoft.Compute/virtualMachines",
            timespan="PT5M",
            interval=timedelta(seconds=1),
            metricnames="Percentage CPU",
            aggregation="Average",
            **extra,
        )

    either = " or ".join(f"Microsoft.ResourceId eq '{i}'" for i in ids[:2])
    split = wait_for(
        lambda: (found := points(pool(filter=either))) and all(found.values()) and found,
        "a CPU point for each of two VMs",
    )
    assert {k.lower() for k in split} == {i.lower() for i in ids[:2]}
    assert all(0 <= v <= 100 for series in split.values() for v in series)
    assert len(points(pool(filter="Microsoft.ResourceId eq '*'", top=1))) == 1
    own = monitor.metrics.list(
        ids[2], timespan="PT5M", interval=timedelta(seconds=1), metricnames="Percentage CPU"
    )
    assert [len(m.timeseries) for m in own.value] == [1]
    with pytest.raises(HttpResponseError, match="region and metricnamespace"):
        monitor.metrics.list_at_subscription_scope(LOCATION, metricnames="Percentage CPU")
    with pytest.raises(HttpResponseError, match="one dimension"):
        pool(filter=f"Microsoft.ResourceId eq '{ids[0]}' or Foo eq 'x'")
