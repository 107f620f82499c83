"""The container groups' lifecycle, ticked by their lifecycle loop (``localazure.nodes``).

A group is created ``Pending``; once its images are "pulled" (the simulated pull time) every
container starts as a local process in its sandbox (``sandbox``): the group is ``Running``, its
provisioning ``Succeeded``. A container that exits is ``Terminated`` with its exit code; the
restart policy decides whether it starts again (``Always``; ``OnFailure`` when the code is not
0; ``Never``). When no container runs any more the group's state is ``Succeeded`` (every exit
code 0) or ``Failed``, and billing stops. ``stop`` kills the processes (state ``Stopped``);
``start`` and ``restart`` start them again.

Billing (``USAGE_KIND``): intervals from the start of the pull to the end of the last container,
priced by the group's CPU and memory requests (``pricing``); kept after the group is deleted.

Records are changed in a store transaction by this runner and by the request handlers alike: the
store's lock is the one lock (a lock of its own, taken in the other order by a completing
operation, deadlocked the server).
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from typing import Any

from localazure.containerinstance import SECRETS_KIND, USAGE_KIND, pricing, sandbox, spec
from localazure.core.context import Context
from localazure.identity.routes import bind_workload_identity
from localazure.nodes import containers
from localazure.nodes.containers import ContainerRuntime
from localazure.settings import REDIRECTED_SUFFIXES

log = logging.getLogger("localazure.containerinstance")
STATE_KIND = "aci-state"
STOP_EXIT_CODE = 137


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _event(view: dict[str, Any], now: float, name: str, message: str, kind: str = "Normal"):
    view.setdefault("events", []).append(
        {
            "count": 1,
            "firstTimestamp": iso(now),
            "lastTimestamp": iso(now),
            "name": name,
            "message": message,
            "type": kind,
        }
    )


def _key(group_id: str, container: str) -> str:
    return f"{group_id.lower()}|{container}"


def _views(group: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (c, c["properties"].setdefault("instanceView", {}))
        for c in group["properties"]["containers"]
    ]


def _set_group_state(group: dict[str, Any], state: str, now: float, message: str) -> None:
    view = group["properties"].setdefault("instanceView", {"events": []})
    if view.get("state") != state:
        view["state"] = state
        _event(view, now, state, message)


# -- billing ------------------------------------------------------------------------------------


def open_billing(ctx: Context, group: dict[str, Any], now: float) -> None:
    cpu, memory = spec.requests_of(group)
    usage = ctx.store.get(USAGE_KIND, group["id"].lower()) or {
        "id": group["id"],
        "name": group["name"],
        "intervals": [],
    }
    usage.update(vcpus=cpu, memory_gb=memory, os_type=group["properties"]["osType"])
    if not usage["intervals"] or usage["intervals"][-1][1] is not None:
        usage["intervals"].append([now, None])
    ctx.store.put(USAGE_KIND, group["id"].lower(), usage)


def close_billing(ctx: Context, group_id: str, now: float) -> None:
    usage = ctx.store.get(USAGE_KIND, group_id.lower())
    if usage and usage["intervals"] and usage["intervals"][-1][1] is None:
        usage["intervals"][-1][1] = now
        ctx.store.put(USAGE_KIND, group_id.lower(), usage)


def usage_report(ctx: Context, now: float) -> dict[str, Any]:
    groups = []
    for usage in ctx.store.values(USAGE_KIND):
        seconds = sum(
            (end if end is not None else now) - start for start, end in usage["intervals"]
        )
        price = pricing.GroupPrice(usage["vcpus"], usage["memory_gb"], usage["os_type"])
        groups.append(
            {
                "id": usage["id"],
                "name": usage["name"],
                "vcpus": usage["vcpus"],
                "memory_gb": usage["memory_gb"],
                "running": bool(usage["intervals"]) and usage["intervals"][-1][1] is None,
                "seconds": round(seconds, 3),
                "price_per_second_usd": price.per_second_usd,
                "cost_usd": price.cost(seconds),
            }
        )
    return {"groups": groups, "total_cost_usd": round(sum(g["cost_usd"] for g in groups), 8)}


# -- transitions shared with the request handlers -----------------------------------------------


def schedule_start(ctx: Context, group: dict[str, Any], now: float, pull_s: float) -> None:
    """The group (re)starts: containers ``Waiting`` while their images are pulled."""
    if group["properties"].get("provisioningState") != "Succeeded":
        group["properties"]["provisioningState"] = "Creating"
    _set_group_state(group, "Pending", now, "The container group is starting.")
    for container, view in _views(group):
        view.setdefault("restartCount", 0)
        view["currentState"] = {"state": "Waiting", "detailStatus": "ContainerCreating"}
        _event(view, now, "Pulling", f'pulling image "{container["properties"]["image"]}"')
    open_billing(ctx, group, now)
    ctx.store.put(STATE_KIND, group["id"].lower(), {"phase": "pulling", "start_at": now + pull_s})


def stop(ctx: Context, runtime: ContainerRuntime, group: dict[str, Any], now: float) -> None:
    """Kill every container (exit 137), state ``Stopped``, billing closed."""
    for container, view in _views(group):
        key = _key(group["id"], container["name"])
        if runtime.has(key):
            runtime.forget(key)
        if (view.get("currentState") or {}).get("state") in ("Running", "Waiting"):
            _terminate(view, now, STOP_EXIT_CODE, "Killed")
            _event(view, now, "Killing", f"Killing container {container['name']}")
    _set_group_state(group, "Stopped", now, "The container group was stopped.")
    ctx.store.put(STATE_KIND, group["id"].lower(), {"phase": "stopped"})
    close_billing(ctx, group["id"], now)


def forget(ctx: Context, runtime: ContainerRuntime, group: dict[str, Any], now: float) -> None:
    """Delete: kill the processes, drop the sandbox, runtime state and secrets."""
    for container, _ in _views(group):
        runtime.forget(_key(group["id"], container["name"]))
    close_billing(ctx, group["id"], now)
    ctx.store.delete(STATE_KIND, group["id"].lower())
    ctx.store.delete(SECRETS_KIND, group["id"].lower())
    sandbox.remove(ctx, group["id"])


def _terminate(view: dict[str, Any], now: float, code: int, detail: str) -> None:
    current = view.get("currentState") or {}
    view["previousState"] = current
    view["currentState"] = {
        "state": "Terminated",
        "startTime": current.get("startTime"),
        "exitCode": code,
        "finishTime": iso(now),
        "detailStatus": detail,
    }


# -- the runner ---------------------------------------------------------------------------------


class GroupRunner:
    """The ``Workloads`` of Container Instances."""

    name = "containerinstance"

    def __init__(self, ctx: Context, runtime: ContainerRuntime):
        self.ctx = ctx
        self.runtime = runtime

    def recover(self, stopped_at: float) -> None:
        """Containers that ran when the emulator stopped are Terminated (137) then, and their
        restart policy applies on the next tick."""
        with self.ctx.store.transaction():
            for gid, state in self.ctx.store.items(STATE_KIND):
                group = self.ctx.store.get_resource(gid)
                if group is None or state["phase"] != "running":
                    continue
                for _, view in _views(group):
                    if (view.get("currentState") or {}).get("state") == "Running":
                        _terminate(view, stopped_at, STOP_EXIT_CODE, "Killed")
                        _event(view, stopped_at, "Killing", "localazure restarted")
                self.ctx.store.put_resource(group)

    def tick(self, now: float) -> None:
        for gid, _ in self.ctx.store.items(STATE_KIND):
            with self.ctx.store.transaction():
                group = self.ctx.store.get_resource(gid)
                current = self.ctx.store.get(STATE_KIND, gid)
                if group is None or current is None:
                    self.ctx.store.delete(STATE_KIND, gid)
                    continue
                if current["phase"] == "pulling":
                    if not self.start_if_due(group, now):
                        continue
                elif current["phase"] == "running":
                    self._watch(group, now)
                else:
                    continue
                self.ctx.store.put_resource(group)

    def start_if_due(self, group: dict[str, Any], now: float) -> bool:
        """Start the group's containers once its pull is over; True when they were started
        (or failed to) now. The caller holds a store transaction and saves the group."""
        current = self.ctx.store.get(STATE_KIND, group["id"].lower()) or {}
        if current.get("phase") != "pulling" or now < current["start_at"]:
            return False
        self._start_group(group, now)
        self.ctx.store.put_resource(group)
        return True

    # -- steps ------------------------------------------------------------------------------

    def _start_group(self, group: dict[str, Any], now: float) -> None:
        secrets = self.ctx.store.get(SECRETS_KIND, group["id"].lower()) or {}
        try:
            sandbox.check_mounts(self.ctx, group, secrets.get("storage_keys") or {})
        except sandbox.MountError as err:
            for _, view in _views(group):
                view["currentState"] = {"state": "Waiting", "detailStatus": "FailedMount"}
                _event(view, now, "FailedMount", err.message, "Warning")
            group["properties"]["provisioningState"] = "Failed"
            _set_group_state(group, "Failed", now, err.message)
            self.ctx.store.put(STATE_KIND, group["id"].lower(), {"phase": "failed"})
            close_billing(self.ctx, group["id"], now)
            return
        for container, view in _views(group):
            _event(
                view,
                now,
                "Pulled",
                f'Successfully pulled image "{container["properties"]["image"]}"',
            )
            self._start_container(group, container, view, secrets, now)
        group["properties"]["provisioningState"] = "Succeeded"
        _set_group_state(group, "Running", now, "The container group is running.")
        self.ctx.store.put(STATE_KIND, group["id"].lower(), {"phase": "running"})

    def _start_container(self, group, container, view, secrets, now: float) -> None:
        ctx = self.ctx
        box = sandbox.prepare(ctx, group, container, secrets.get("storage_keys") or {})
        props = container["properties"]
        image_info = (secrets.get("images") or {}).get(container["name"]) or {}
        env_vars = {v["name"]: v.get("value", "") for v in props.get("environmentVariables") or []}
        env_vars.update((secrets.get("env") or {}).get(container["name"]) or {})
        platform = {
            "LOCALAZURE_DNS": ",".join(REDIRECTED_SUFFIXES),
            "LOCALAZURE_ENDPOINT": ctx.endpoint,
            "REQUESTS_CA_BUNDLE": str(ctx.settings.ca_bundle),
            "SSL_CERT_FILE": str(ctx.settings.ca_bundle),
            "HOSTNAME": group["name"],
            "PWD": str(box.root),
        }
        principal = _workload_principal(group)
        if principal:
            platform["IDENTITY_ENDPOINT"] = f"{ctx.endpoint}/msi/token"
            platform["IDENTITY_HEADER"] = bind_workload_identity(ctx, principal)
        env = containers.container_environment(
            ctx.settings.state_dir,
            box.root,
            containers.image_environment(props["image"], image_info),
            {k: box.rewrite(str(v)) for k, v in env_vars.items()},
            platform,
        )
        command = props.get("command") or image_info.get("cmd") or []
        restarts = view.get("restartCount", 0)
        log_path = box.logs / f"{restarts}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")
        line = shlex.join(box.rewrite(arg) for arg in command) if command else "true"
        self.runtime.start(_key(group["id"], container["name"]), line, env, box.root, log_path)
        view["currentState"] = {"state": "Running", "startTime": iso(now), "detailStatus": ""}
        _event(view, now, "Started", f"Started container {container['name']}")

    def _watch(self, group: dict[str, Any], now: float) -> None:
        policy = group["properties"]["restartPolicy"]
        secrets = self.ctx.store.get(SECRETS_KIND, group["id"].lower()) or {}
        running = 0
        for container, view in _views(group):
            key = _key(group["id"], container["name"])
            state = (view.get("currentState") or {}).get("state")
            if state == "Running" and not self.runtime.has(key):
                # The process died with a previous emulator process (see recover).
                _terminate(view, now, STOP_EXIT_CODE, "Killed")
                state = "Terminated"
            elif state == "Running":
                code = self.runtime.exit_code(key)
                if code is None:
                    running += 1
                    continue
                self.runtime.forget(key)
                _terminate(view, now, code, "Completed" if code == 0 else "Error")
                _event(
                    view,
                    now,
                    "Terminated",
                    f"Container {container['name']} exited with code {code}",
                )
                state = "Terminated"
            if state != "Terminated":
                continue
            code = view["currentState"]["exitCode"]
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                view["restartCount"] = view.get("restartCount", 0) + 1
                self._start_container(group, container, view, secrets, now)
                running += 1
        if running:
            return
        codes = [v["currentState"].get("exitCode") for _, v in _views(group)]
        succeeded = all(code == 0 for code in codes)
        _set_group_state(
            group,
            "Succeeded" if succeeded else "Failed",
            now,
            "Every container exited."
            if succeeded
            else f"A container exited with code {max(c or 0 for c in codes)}.",
        )
        self.ctx.store.put(STATE_KIND, group["id"].lower(), {"phase": "terminated"})
        close_billing(self.ctx, group["id"], now)


def _workload_principal(group: dict[str, Any]) -> str | None:
    identity = group.get("identity") or {}
    if identity.get("principalId"):
        return identity["principalId"]
    for value in (identity.get("userAssignedIdentities") or {}).values():
        if value.get("principalId"):
            return value["principalId"]
    return None


def current_log(ctx: Context, group: dict[str, Any], container: str) -> str:
    """The log of the container's current (or last) run."""
    logs = sandbox.group_dir(ctx, group["id"]) / container / "logs"
    files = sorted(logs.glob("*.log"), key=lambda p: int(p.stem)) if logs.is_dir() else []
    return files[-1].read_text(encoding="utf-8", errors="replace") if files else ""
