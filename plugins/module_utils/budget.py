# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A spending limit for a run (``eval_budget_usd``).

Before each new job the engine asks :meth:`Budget.allows`: the spend so far (the whole run's,
every session, node time measured as for the report) plus the estimated cost of the tasks the
running jobs still hold plus the new chunk's must stay within the limit. Each task is estimated
at the run's measured cost per completed task (node time per task, startup and idle included);
before the first result, at ``prior_task_usd`` when given, else the first round of jobs (one per
worker) is let through to measure it. Work already running is never cancelled unless
``cancel_running`` is set, and then only once the spend itself reaches the limit. The ledger
stays resumable: the run stops with :class:`BudgetReached` (status ``stopped``), and running it
again with a higher limit carries on with the tasks left.

A warning is logged once when the spend passes ``warn_fraction`` of the limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import CostBreakdown

log = logging.getLogger(__name__)


class BudgetReached(Exception):
    """The run stopped feeding work because its budget would be passed; it can be resumed."""


@dataclass
class Budget:
    limit_usd: float
    warn_fraction: float = 0.8
    cancel_running: bool = False
    prior_task_usd: float | None = None
    warned: bool = field(default=False, init=False)
    refused: str | None = field(default=None, init=False)  # why the last chunk was refused
    last: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.limit_usd <= 0:
            raise ValueError(f"eval_budget_usd must be positive, not {self.limit_usd!r}")
        if not 0 < self.warn_fraction <= 1:
            raise ValueError(
                f"eval_budget_warn_fraction must be in (0, 1], not {self.warn_fraction!r}"
            )

    def per_task_usd(self, cost: CostBreakdown) -> float | None:
        if cost.cost_per_task_usd is not None:
            return cost.cost_per_task_usd
        return self.prior_task_usd

    def allows(self, chunk: int, in_flight: int, cost: CostBreakdown, first_round: bool) -> bool:
        """May a job of ``chunk`` more tasks start, with ``in_flight`` tasks held by jobs?"""
        self.check_warning(cost)
        per_task = self.per_task_usd(cost)
        if per_task is None:
            self.refused = None
            return first_round  # nothing measured yet: the first jobs measure it
        committed = cost.total_usd + (in_flight + chunk) * per_task
        self.last = {
            "limit_usd": self.limit_usd,
            "spent_usd": round(cost.total_usd, 6),
            "per_task_usd": round(per_task, 6),
            "committed_usd": round(committed, 6),
        }
        if committed > self.limit_usd:
            self.refused = (
                f"spend ${cost.total_usd:.4f} + {in_flight + chunk} task(s) x ${per_task:.4f} "
                f"= ${committed:.4f} would pass the budget of ${self.limit_usd:.4f}"
            )
            return False
        self.refused = None
        return True

    def must_cancel(self, cost: CostBreakdown) -> bool:
        return self.cancel_running and cost.total_usd >= self.limit_usd

    def check_warning(self, cost: CostBreakdown) -> None:
        if not self.warned and cost.total_usd >= self.warn_fraction * self.limit_usd:
            self.warned = True
            log.warning(
                "budget warning: $%.4f spent, %.0f%% of the budget of $%.4f",
                cost.total_usd,
                100 * cost.total_usd / self.limit_usd,
                self.limit_usd,
            )

    def stop_message(self, pending: int, ledger: str) -> str:
        return (
            f"stopped at the budget: {self.refused or 'the spend reached the budget'}. "
            f"{pending} task(s) are still pending in {ledger}; nothing running was cancelled"
            f"{' (eval_budget_cancel_running cancelled what ran)' if self.cancel_running else ''}. "
            "Run again with a higher eval_budget_usd to resume."
        )

    def status(self) -> dict[str, Any]:
        return {
            "budget": {
                **self.last,
                "limit_usd": self.limit_usd,
                "warned": self.warned,
                "feeding_stopped": self.refused is not None,
            }
        }
