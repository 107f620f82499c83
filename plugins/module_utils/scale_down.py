# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scale to zero after a run, checked: however the run ended, no node, pool node or VM of the
run is left running.

A tier that holds nodes tells how many it still holds (``HoldsNodes.nodes_left``) and, when it
must give them back itself, does so in ``release_nodes`` (a Batch pool resized to zero, VMs
deallocated); Azure ML clusters scale down on their own after their idle time, so the check waits
for that (``wait_s``) and reports what is left. A pool of tiers is checked member by member.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class HoldsNodes(Protocol):
    def nodes_left(self) -> int:
        """Nodes (or VMs, or pool nodes) the tier's compute holds now."""


@runtime_checkable
class ReleasesNodes(Protocol):
    def release_nodes(self) -> None:
        """Give back every node the run holds (nothing to do when none)."""


def _members(tier: object) -> dict[str, object]:
    members = getattr(tier, "members", None)
    if members is None:
        return {getattr(tier, "name", "tier"): tier}
    return {m.name: m.tier for m in members if m.tier is not None}


def nodes_left(
    tier: object,
    *,
    wait_s: float = 0.0,
    interval_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Release what each tier must release, then wait up to ``wait_s`` for every tier to hold
    no node; the nodes each one still holds (tiers that hold none are reported as 0)."""
    members = _members(tier)
    for name, member in members.items():
        if isinstance(member, ReleasesNodes):
            try:
                member.release_nodes()
            except Exception as exc:  # reported below as nodes left, never raised
                log.warning("tier %s: releasing its nodes failed: %s", name, exc)
    deadline = time.monotonic() + wait_s
    while True:
        left = {name: _count(name, member) for name, member in members.items()}
        if not any(left.values()) or time.monotonic() >= deadline:
            break
        sleep(interval_s)
    for name, count in left.items():
        if count:
            log.warning("tier %s still holds %d node(s) after the run", name, count)
    return left


def _count(name: str, tier: object) -> int:
    if not isinstance(tier, HoldsNodes):
        return 0
    with contextlib.suppress(Exception):
        return int(tier.nodes_left())
    log.warning("tier %s: could not count its nodes", name)
    return -1
