# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Follow a container group to its end: its container's new log lines as they come, the exit
code, and what the run cost by ACI's per-second prices.

ACI's log API returns a container's whole log (or its last ``tail`` lines); the follower keeps
the number of characters already shown and prints what is new, so a line appears once. When the
container restarts (``restartCount`` grows) its log starts again from the beginning.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Linux, East US, pay-as-you-go: https://azure.microsoft.com/pricing/details/container-instances/
VCPU_SECOND_USD = 0.0000135
GB_SECOND_USD = 0.0000015
ENDED = ("Succeeded", "Failed", "Stopped")


class Abandoned(Exception):
    """Whoever started the follow is gone (ansible-playbook exited after a Ctrl-C)."""


class GroupFailed(Exception):
    """The group could not run its container (a mount, the image, provisioning)."""


@dataclass
class Outcome:
    exit_code: int | None
    state: str
    output: str
    started_at: str | None
    finished_at: str | None
    seconds: float
    vcpus: float
    memory_gb: float

    def cost_usd(self, vcpu_second: float = VCPU_SECOND_USD, gb_second: float = GB_SECOND_USD):
        return round(self.seconds * (self.vcpus * vcpu_second + self.memory_gb * gb_second), 6)


def _ts(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _billed_seconds(group, container) -> tuple[float, str | None, str | None]:
    """From the first event of the container (its image pull) to its finish."""
    view = container.instance_view
    events = list(view.events or []) if view else []
    firsts = [e.first_timestamp for e in events if e.first_timestamp]
    state = view.current_state if view else None
    start = min(firsts, default=None) or (state.start_time if state else None)
    finish = state.finish_time if state else None
    begin, end = _ts(start), _ts(finish) or time.time()
    return (max(0.0, end - begin) if begin else 0.0), _iso(start), _iso(finish)


def _iso(value) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


def _failure(group, container) -> str | None:
    """Why the group cannot run, from its provisioning state and its container's events."""
    view = container.instance_view
    warnings = (
        [e for e in (view.events or []) if (e.type or "").lower() == "warning"] if view else []
    )
    if group.provisioning_state == "Failed" or (
        warnings and (view.current_state is None or view.current_state.state == "Waiting")
    ):
        detail = "; ".join(e.message for e in warnings if e.message) or "no reason given"
        return f"container group '{group.name}' failed to start: {detail}"
    return None


def _container_of(group: Any, name: str, container_name: str | None) -> Any:
    """The container to follow: the one named, or the group's only one."""
    containers = list(group.containers or [])
    names = ", ".join(c.name for c in containers) or "none"
    if container_name is None:
        if len(containers) == 1:
            return containers[0]
        raise GroupFailed(
            f"container group '{name}' has {len(containers)} containers ({names}): name the "
            "one to follow with 'container'"
        )
    for container in containers:
        if container.name == container_name:
            return container
    raise GroupFailed(f"container group '{name}' has no container '{container_name}' ({names})")


def follow(
    client,
    resource_group: str,
    name: str,
    container_name: str | None,
    show: Callable[[str], None],
    poll_interval: float = 1.0,
    timeout: float | None = None,
    abandoned: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Poll the group until its container ends (without restarting), showing new log lines;
    raise ``Abandoned`` as soon as ``abandoned()`` says so."""
    shown = 0
    restarts = 0
    pending = ""
    output: list[str] = []
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        group = client.container_groups.get(resource_group, name)
        container = _container_of(group, name, container_name)
        container_name = container.name
        reason = _failure(group, container)
        if reason:
            raise GroupFailed(reason)
        view = container.instance_view
        if view and (view.restart_count or 0) != restarts:
            restarts, shown = view.restart_count or 0, 0
        content = client.containers.list_logs(resource_group, name, container_name).content or ""
        if len(content) > shown:
            pending += content[shown:]
            shown = len(content)
            *lines, pending = pending.split("\n")
            for line in lines:
                show(line)
                output.append(line)
        state = view.current_state if view else None
        group_state = group.instance_view.state if group.instance_view else None
        if state is not None and state.state == "Terminated" and group_state in ENDED:
            if pending:
                show(pending)
                output.append(pending)
            seconds, started, finished = _billed_seconds(group, container)
            requests = container.resources.requests
            return Outcome(
                exit_code=state.exit_code,
                state=group_state,
                output="\n".join(output),
                started_at=started,
                finished_at=finished,
                seconds=seconds,
                vcpus=float(requests.cpu),
                memory_gb=float(requests.memory_in_gb),
            )
        if deadline and time.monotonic() > deadline:
            raise TimeoutError(f"container group '{name}' did not end within {timeout} s")
        _sleep(poll_interval, abandoned)


def _sleep(seconds: float, abandoned: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while True:
        if abandoned():
            raise Abandoned("the controller is gone")
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))
