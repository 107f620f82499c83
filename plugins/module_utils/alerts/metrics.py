# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nodes' CPU, memory and disk figures, read from Azure Monitor through azure-mgmt-monitor.

One ``metrics.list`` request reads every figure of every node of the tier's compute (the
metrics are split by their node and run dimensions), so the request count is one per
``interval_s`` however many nodes there are; the engine reads on that cadence, slower than
job polling. Each read asks for the last ``window_s`` at the ``grain_s`` grain, and the
points are kept per node, so that how long a figure has been over a threshold is known from
Azure's own timestamps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

FIGURES = ("cpu", "memory", "disk")
_KEEP_POINTS = 240


@dataclass(frozen=True)
class MetricsSource:
    """Where a tier's node figures live in Azure Monitor.

    ``metric_names`` maps the figures (cpu, memory or memory_available, disk, or disk_used +
    disk_available in megabytes, turned into percentages) to the resource's metric names;
    ``filter`` selects the tier's nodes and splits the series by ``node_dimension`` (and
    ``run_dimension``, the job a node runs, when the resource has one)."""

    client_factory: Callable[[], Any]
    resource_id: str
    metric_names: Mapping[str, str]
    filter: str | None
    node_dimension: str
    run_dimension: str | None = None
    # A multi-resource query (``metrics.list_at_subscription_scope``): every resource of
    # ``namespace`` in ``region`` of the client's subscription, as many VMs in one request;
    # ``resource_id`` is then the subscription's id.
    region: str | None = None
    namespace: str | None = None
    # Without a run dimension: the tier's handle of the job on a node (None: no job).
    run_of: Callable[[str], str | None] | None = None
    # Azure answers at most ``top`` series for a filtered query (10 unless asked).
    top: int = 100


@dataclass
class NodeHealth:
    node_id: str
    run_id: str | None = None
    # figure -> [(unix time, percent)], oldest first
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def latest(self) -> dict[str, float]:
        return {f: points[-1][1] for f, points in self.series.items() if points}

    def over_for(self, threshold: float) -> dict[str, float]:
        """For each figure whose latest point is above ``threshold``: for how long it has
        been above without a break (from the first such point to the latest)."""
        over = {}
        for figure, points in self.series.items():
            since = None
            for at, value in points:
                if value <= threshold:
                    since = None
                elif since is None:
                    since = at
            if since is not None:
                over[figure] = points[-1][0] - since
        return over

    def over_since(self, threshold: float) -> float | None:
        """When the figure that has been over ``threshold`` longest went over (None if none)."""
        over = self.over_for(threshold)
        if not over:
            return None
        latest = max(points[-1][0] for points in self.series.values() if points)
        return latest - max(over.values())

    def to_dict(self, last: int = 60) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "run_id": self.run_id,
            "latest": {k: round(v, 1) for k, v in self.latest.items()},
            "series": {
                f: [[round(t, 1), round(v, 1)] for t, v in points[-last:]]
                for f, points in self.series.items()
            },
        }


class MetricsReader:
    def __init__(
        self,
        source: MetricsSource,
        *,
        interval_s: float = 60.0,
        grain_s: float = 60.0,
        window_s: float = 600.0,
    ) -> None:
        if interval_s <= 0 or grain_s <= 0 or window_s < grain_s:
            raise ValueError("metrics need interval_s > 0, grain_s > 0 and window_s >= grain_s")
        self.source = source
        self.interval_s = interval_s
        self.grain_s = grain_s
        self.window_s = window_s
        self.requests = 0
        self.errors = 0
        self.first_read_at: float | None = None
        self.last_read_at: float | None = None
        self.nodes: dict[str, NodeHealth] = {}
        self._client: Any = None
        self._next_at = 0.0

    @property
    def requests_per_minute(self) -> float:
        """The budget: one request per interval."""
        return 60.0 / self.interval_s

    def due(self, now: float) -> bool:
        return now >= self._next_at

    def read(self, now: float) -> list[NodeHealth]:
        """The nodes' figures, read again when the cadence says so; a failed read is logged
        and the last figures are kept (the run never depends on Azure Monitor)."""
        if not self.due(now):
            return list(self.nodes.values())
        self._next_at = now + self.interval_s
        try:
            self._take(self._request(now))
        except Exception as exc:
            self.errors += 1
            log.warning("Azure Monitor metrics read failed: %s", _short(exc))
        return list(self.nodes.values())

    def _request(self, now: float) -> Any:
        if self._client is None:
            self._client = self.source.client_factory()
        end = datetime.fromtimestamp(now, tz=UTC)
        start = end - timedelta(seconds=self.window_s)
        self.requests += 1
        self.first_read_at = self.first_read_at or now
        self.last_read_at = now
        query = dict(
            timespan=f"{_iso(start)}/{_iso(end)}",
            interval=timedelta(seconds=self.grain_s),
            metricnames=",".join(self.source.metric_names.values()),
            aggregation="Average",
            filter=self.source.filter,
            top=self.source.top,
        )
        if self.source.region:
            return self._client.metrics.list_at_subscription_scope(
                self.source.region, metricnamespace=self.source.namespace, **query
            )
        return self._client.metrics.list(self.source.resource_id, **query)

    def _take(self, response: Any) -> None:
        by_metric = {name.lower(): figure for figure, name in self.source.metric_names.items()}
        raw: dict[str, dict[str, dict[float, float]]] = {}
        runs: dict[str, str | None] = {}
        for metric in response.value or []:
            figure = by_metric.get((metric.name.value or "").lower())
            if figure is None:
                continue
            for series in metric.timeseries or []:
                dims = {(m.name.value or "").lower(): m.value for m in series.metadatavalues or []}
                node = dims.get(self.source.node_dimension.lower())
                if not node:
                    continue
                run = dims.get((self.source.run_dimension or "").lower()) or None
                if run:
                    runs[node] = run
                else:
                    runs.setdefault(node, None)
                points = raw.setdefault(node, {}).setdefault(figure, {})
                for point in series.data or []:
                    if point.average is not None:
                        points[point.time_stamp.timestamp()] = float(point.average)
        seen = set()
        for node_id, figures in raw.items():
            seen.add(node_id)
            health = self.nodes.setdefault(node_id, NodeHealth(node_id))
            health.run_id = runs.get(node_id)
            if self.source.run_of is not None:
                health.run_id = self.source.run_of(node_id)
            for figure, points in _percentages(figures).items():
                merged = dict(health.series.get(figure, []))
                merged.update(points)
                health.series[figure] = sorted(merged.items())[-_KEEP_POINTS:]
        for node_id in list(self.nodes):
            if node_id not in seen:
                del self.nodes[node_id]  # released: its figures no longer matter

    def snapshot(self) -> dict[str, Any]:
        return {
            "resource_id": self.source.resource_id,
            "interval_s": self.interval_s,
            "grain_s": self.grain_s,
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_minute_budget": round(self.requests_per_minute, 3),
            "nodes": [n.to_dict() for n in self.nodes.values()],
        }


def _percentages(figures: dict[str, dict[float, float]]) -> dict[str, dict[float, float]]:
    out = {f: v for f, v in figures.items() if f in FIGURES}
    if "memory_available" in figures and "memory" not in out:
        out["memory"] = {t: 100.0 - v for t, v in figures["memory_available"].items()}
    used, free = figures.get("disk_used"), figures.get("disk_available")
    if used and free and "disk" not in out:
        out["disk"] = {
            t: 100.0 * used[t] / (used[t] + free[t])
            for t in used
            if t in free and used[t] + free[t] > 0
        }
    return out


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
