"""Azure Monitor as an emulated service: metrics of the simulated nodes (``figures``,
``metrics``) and metric alert rules with action groups (``alerting``), sampled and evaluated
by one background thread started and stopped with the server."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.monitor import alerting, metrics
from localazure.monitor.figures import NodeFigures, Sampler


class MonitorService(BaseService):
    name = "monitor"

    def __init__(self) -> None:
        self.figures = NodeFigures()
        self._sampler: Sampler | None = None

    def register(self, routes: Routes, ctx: Context) -> None:
        metrics.register(routes.arm, ctx, self.figures)
        alerting.register(routes.arm, ctx)
        self._sampler = Sampler(ctx, self.figures, alerting.RuleEvaluator(ctx, self.figures))

    def bootstrap(self, ctx: Context) -> None:
        # A reset empties the store: the samples of its nodes go too.
        self.figures.clear()

    def start(self) -> None:
        if self._sampler is not None:
            self._sampler.start()

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
