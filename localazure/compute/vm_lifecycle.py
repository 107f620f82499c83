"""The ``Workloads`` of the Compute service, ticked by the shared lifecycle loop
(``nodes.lifecycle``): it brings each VM's processes in line with its power state.

- Running: its SSH server listens on its public IP (restarted after a reboot or a new address,
  down while an ``ssh_refused`` fault lasts); its custom data runs once, at first boot (as
  cloud-init does, output in ``/var/log/cloud-init-output.log`` on its disk); its containers
  start (after a ``slow_start`` delay), are watched, frozen (``stuck``) or killed (``crash``,
  ``docker kill``), and removed.
- Not running (stopped, deallocated, restarting, deleted): no SSH server, no session, no
  container (their processes are killed: exit code 137, as on a VM that loses power).

After an emulator restart, containers that were running are exited (their processes did not
survive) and the SSH servers of running VMs come back.
"""

from __future__ import annotations

import base64
import logging
import signal
from typing import Any

from localazure.compute import docker_engine, power, sandbox, ssh, vm_faults
from localazure.compute.virtual_machines import delete_vm, public_ip_of
from localazure.core.context import Context
from localazure.identity.routes import bind_workload_identity
from localazure.network.security import inbound_allowed
from localazure.nodes import containers, workload_faults
from localazure.nodes import pool as node_pool
from localazure.nodes.containers import ContainerRuntime

log = logging.getLogger("localazure.compute")
CUSTOM_DATA = "custom-data"


def _default_principal(vm: dict[str, Any]) -> str | None:
    identity = vm.get("identity") or {}
    if identity.get("principalId"):
        return identity["principalId"]
    for item in (identity.get("userAssignedIdentities") or {}).values():
        if item.get("principalId"):
            return item["principalId"]
    return None


class VmLifecycle:
    name = "compute"

    def __init__(self, ctx: Context, runtime: ContainerRuntime, hub: ssh.SshHub):
        self.ctx = ctx
        self.runtime = runtime
        self.hub = hub

    # -- Workloads ------------------------------------------------------------------------------

    def recover(self, stopped_at: float) -> None:
        for record in power.all_records(self.ctx):
            for container in docker_engine.vm_containers(self.ctx, record["id"]):
                if container["status"] in ("created", "running"):
                    container.update(status="exited", exit_code=137, finished_at=stopped_at)
                    docker_engine.save_container(self.ctx, container)

    def tick(self, now: float) -> None:
        ctx = self.ctx
        records = {power.key(r["id"]): r for r in power.all_records(ctx)}
        for key in self.hub.running():
            if key not in records:
                self.hub.stop(key)
        self._forget_orphans(records)
        for record in records.values():
            try:
                self._step(record, now)
            except Exception:  # noqa: BLE001 - one broken VM must not stop the others
                log.exception("compute lifecycle failed on %s", record["id"])

    # -- one VM ---------------------------------------------------------------------------------

    def _forget_orphans(self, records: dict[str, dict[str, Any]]) -> None:
        """Containers and sessions of VMs that were deleted."""
        for key in self.runtime.running_keys():
            vm_key = key.split("|", 1)[0]
            if vm_key not in records:
                self.runtime.forget(key)
        for container in self.ctx.store.values(docker_engine.CONTAINER_KIND):
            if power.key(container["vm_id"]) not in records:
                self.ctx.store.delete(docker_engine.CONTAINER_KIND, container["key"])

    def _step(self, record: dict[str, Any], now: float) -> None:
        ctx = self.ctx
        vm = ctx.store.get_resource(record["id"])
        if vm is None:
            return
        for fault in (
            vm_faults.due(ctx, vm["name"], now) if power.state(record, now) == "running" else []
        ):
            self._strike(record, vm, fault)
            vm_id = record["id"]
            vm, record = ctx.store.get_resource(vm_id), power.get(ctx, vm_id)
            if vm is None or record is None:
                self.hub.stop(power.key(vm_id))
                return
        key = power.key(record["id"])
        state = power.state(record, now)
        if state != "running":
            self.hub.stop(key)
            self._power_loss(record, now)
            return
        if record.get("identity_principal") != _default_principal(vm):
            principal = _default_principal(vm)
            record["identity_principal"] = principal
            record["identity_secret"] = (
                bind_workload_identity(ctx, principal) if principal else None
            )
            power.save(ctx, record)
        if record.get("agent_written") != record["boot"]:
            sandbox.write_agent(
                ctx, sandbox.disk_dir(ctx, record["disk_id"]), record["agent_secret"]
            )
            record["agent_written"] = record["boot"]
            power.save(ctx, record)
        if record.get("containers_boot", 0) != record["boot"]:
            self._power_loss(record, now)
            record["containers_boot"] = record["boot"]
            power.save(ctx, record)
        address, nic = _address(ctx, vm)
        if address and nic and not vm_faults.refusing(ctx, vm["name"], now):
            self.hub.ensure(
                key,
                address,
                record["host_key"],
                (record["boot"], address),
                self._session(record, vm, nic),
            )
        else:
            self.hub.stop(key)
        self._custom_data(record, vm)
        vm_containers = docker_engine.vm_containers(ctx, vm["id"])
        for container in vm_containers:
            self._container(record, vm, container, now)
        self._mark_node(record, vm_containers, now)

    def _mark_node(
        self, record: dict[str, Any], vm_containers: list[dict[str, Any]], now: float
    ) -> None:
        """The VM's node is busy while a container runs on it, and an ``overload`` fault of
        that container marks it: Azure Monitor's figures of the VM read both. ``_container``
        updates the containers in place, so their statuses are this step's."""
        node = node_pool.get(self.ctx, record["node_id"]) if record.get("node_id") else None
        if node is None or node["released_at"] is not None:
            return
        running = [c for c in vm_containers if c["status"] == "running"]
        workload = running[0]["name"] if running else None
        if node["run_id"] == workload and node["state"] in ("running", "idle"):
            return
        node.update(run_id=workload, state="running" if workload else "idle")
        if running:
            workload_faults.mark_overload(node, running[0]["fault"], workload, now)
        node_pool.save(self.ctx, node)

    def _strike(self, record: dict[str, Any], vm: dict[str, Any], fault: dict[str, Any]) -> None:
        ctx = self.ctx
        kind = fault["fault"]
        log.info("fault %s strikes VM %s", kind, vm["name"])
        if kind == "ssh_drop":
            self.hub.drop(power.key(vm["id"]))
        elif kind == "ssh_refused":
            self.hub.stop(power.key(vm["id"]))
        elif kind == "evict":
            with ctx.store.transaction():
                power.deallocate(ctx, record, "preempted")
                power.set_target(ctx, record, "deallocated", 0.0)
                power.save(ctx, record)
        elif kind == "delete":
            delete_vm(ctx, vm)

    def _session(
        self, record: dict[str, Any], vm: dict[str, Any], nic: dict[str, Any]
    ) -> ssh.Session:
        ctx = self.ctx
        root = sandbox.disk_dir(ctx, record["disk_id"])
        home = sandbox.home(root, record["admin_user"])
        env = containers.container_environment(
            ctx.settings.state_dir,
            home,
            {
                "USER": record["admin_user"],
                "LOGNAME": record["admin_user"],
                "SHELL": "/bin/bash",
                "LOCALAZURE_VM": vm["name"],
            },
            docker_engine.identity_environment(ctx, record),
        )
        env["PATH"] = f"{root / 'bin'}:{env['PATH']}"
        nic_id = nic["id"]

        def admits(source: str) -> bool:
            # The rules are Azure's for port 22, whichever port the emulator listens on.
            current = ctx.store.get_resource(nic_id)
            return current is not None and inbound_allowed(ctx, current, source, 22)

        return ssh.Session(record["admin_user"], list(record["public_keys"]), home, env, admits)

    def _custom_data(self, record: dict[str, Any], vm: dict[str, Any]) -> None:
        if record["custom_data_done"] or not record.get("custom_data"):
            return
        ctx = self.ctx
        root = sandbox.disk_dir(ctx, record["disk_id"])
        script = root / "var" / "lib" / "cloud" / "user-data.txt"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_bytes(base64.b64decode(record["custom_data"]))
        script.chmod(0o700)
        session_env = self._session(record, vm, _address(ctx, vm)[1] or {"id": ""}).env
        self.runtime.start(
            f"{power.key(record['id'])}|{CUSTOM_DATA}",
            f"exec {script}" if script.read_bytes().startswith(b"#!") else f"bash {script}",
            session_env,
            root,
            root / "var" / "log" / "cloud-init-output.log",
        )
        record["custom_data_done"] = True
        power.save(ctx, record)

    # -- containers -----------------------------------------------------------------------------

    def _container(
        self, record: dict[str, Any], vm: dict[str, Any], c: dict[str, Any], now: float
    ) -> None:
        ctx = self.ctx
        key = c["key"]
        if c["status"] == "removed":
            return
        if c.get("kill_requested") and c["status"] in ("created", "running"):
            if self.runtime.has(key):
                self.runtime.kill(key)
            else:
                c.update(status="exited", exit_code=137, finished_at=now)
            c["kill_requested"] = False
        if c["status"] == "created" and now >= c["start_at"]:
            self._start(record, vm, c, now)
        elif c["status"] == "running" and self.runtime.has(key):
            fault = c["fault"] or {}
            due = workload_faults.fault_due(
                fault,
                c,
                c["started_at"] or now,
                now,
                lambda pattern: self.runtime.output_matches(key, pattern),
            )
            if fault.get("fault") == "crash" and due:
                self.runtime.kill(key)
            if (
                workload_faults.freezes_process(c["fault"], c["command"])
                and not c["frozen"]
                and due
            ):
                self.runtime.signal(key, signal.SIGSTOP)
                c["frozen"] = True
            code = self.runtime.exit_code(key)
            if code is not None:
                self.runtime.forget(key)
                c.update(status="exited", exit_code=code, finished_at=now)
        if c["status"] == "exited" and (c["auto_remove"] or c.get("remove_requested")):
            c["status"] = "removed"
        if c.get("remove_requested") and c["status"] in ("exited", "removed"):
            ctx.store.delete(docker_engine.CONTAINER_KIND, key)
            return
        docker_engine.save_container(ctx, c)

    def _start(
        self, record: dict[str, Any], vm: dict[str, Any], c: dict[str, Any], now: float
    ) -> None:
        ctx = self.ctx
        path = docker_engine.log_path(ctx, record, c["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        c.update(status="running", started_at=now)
        reason = docker_engine.kvm_refusal(vm, c)
        if reason:
            path.write_text(containers.KVM_UNAVAILABLE_LOG.format(reason=reason), encoding="utf-8")
            c.update(status="exited", exit_code=1, finished_at=now)
            return
        if (c["fault"] or {}).get("fault") == "never_starts":
            return
        workdir = path.parent / "rootfs"
        env = docker_engine.container_env(ctx, record, vm, c, workdir)
        self.runtime.start(c["key"], c["command"], env, workdir, path)

    def _power_loss(self, record: dict[str, Any], now: float) -> None:
        """Every process of the VM ends, as when it loses power."""
        prefix = power.key(record["id"]) + "|"
        for key in self.runtime.running_keys():
            if key.startswith(prefix):
                self.runtime.forget(key)
        for c in docker_engine.vm_containers(self.ctx, record["id"]):
            if c["status"] in ("created", "running"):
                c.update(status="exited", exit_code=137, finished_at=now)
                if c["auto_remove"]:
                    c["status"] = "removed"
                docker_engine.save_container(self.ctx, c)


def _address(ctx: Context, vm: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    return public_ip_of(ctx, vm)
