"""``{resource}/providers/Microsoft.Insights/metricDefinitions`` and ``.../metrics``
(api-version 2021-05-01, what azure-mgmt-monitor sends), answered from the node samples.

Azure ML publishes its node figures on the workspace, split by ``ComputeName``, ``InstanceId``
(the node) and ``RunId`` (the job on it): ``CpuUtilizationPercentage``,
``CpuMemoryUtilizationPercentage``, ``DiskUsedMegabytes``, ``DiskAvailMegabytes``, and the
cluster's ``Active Nodes``. ``timespan`` is ``start/end`` (ISO 8601) or a duration ending now;
``interval`` any ISO 8601 duration from one second (Azure's smallest grain is PT1M: tests use
seconds because the emulator's runs are short); ``aggregation`` any of Average, Minimum,
Maximum, Total, Count; ``$filter`` the ``Dim eq 'value'`` / ``Dim eq '*'`` clauses joined by
``and`` (a ``*``, or an ``or`` of one dimension's values, splits the series by that dimension).

A VM publishes ``Percentage CPU`` and ``Available Memory Percentage`` on itself. At subscription
scope (``/subscriptions/{id}/providers/Microsoft.Insights/metrics`` with ``region`` and
``metricnamespace``, what ``metrics.list_at_subscription_scope`` sends) one query reads every
resource of that namespace in the region, split by ``Microsoft.ResourceId``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.core.context import Context
from localazure.core.errors import bad_request, not_found
from localazure.core.http import json_response, require_api_version
from localazure.core.router import Router
from localazure.monitor.figures import NodeFigures, Sample

WORKSPACE_TYPE = "Microsoft.MachineLearningServices/workspaces"
VM_TYPE = "Microsoft.Compute/virtualMachines"
BATCH_TYPE = "Microsoft.Batch/batchAccounts"
# The dimension a multi-resource query (at subscription scope) splits its series by.
RESOURCE_ID_DIM = "Microsoft.ResourceId"
AGGREGATIONS = ("Average", "Minimum", "Maximum", "Total", "Count")
READ = "Microsoft.Insights/metrics/read"
DEFINITIONS_READ = "Microsoft.Insights/metricDefinitions/read"


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    unit: str
    description: str
    dimensions: tuple[str, ...]
    value: Callable[[Sample], float]
    primary: str = "Average"
    # A count of nodes (or their cores): summed over the nodes at each sampling instant, and
    # emitted once a minute as Azure's are, so a one-minute Total is the count itself.
    count: bool = False


_NODE_DIMS = ("RunId", "InstanceId", "ComputeName")


def _batch_count(name: str, description: str, value: Callable[[Sample], float]):
    return MetricDefinition(name, "Count", description, (), value, "Total", count=True)


def _in_state(state: str) -> Callable[[Sample], float]:
    return lambda s: 1.0 if s.state == state else 0.0


_DIM_VALUE: dict[str, Callable[[Sample], str | None]] = {
    "runid": lambda s: s.run_id or "",
    "instanceid": lambda s: s.node_id,
    "computename": lambda s: s.compute,
    "clustername": lambda s: s.compute,
    "scenario": lambda s: "Compute",
    RESOURCE_ID_DIM.lower(): lambda s: s.compute_id,
}

DEFINITIONS: dict[str, tuple[MetricDefinition, ...]] = {
    WORKSPACE_TYPE.lower(): (
        MetricDefinition(
            "CpuUtilizationPercentage",
            "Percent",
            "CPU utilization percentage of a node",
            _NODE_DIMS,
            lambda s: s.cpu,
        ),
        MetricDefinition(
            "CpuMemoryUtilizationPercentage",
            "Percent",
            "Memory utilization percentage of a node",
            _NODE_DIMS,
            lambda s: s.memory,
        ),
        MetricDefinition(
            "DiskUsedMegabytes",
            "Count",
            "Disk space used on a node, in megabytes",
            _NODE_DIMS,
            lambda s: s.disk_used_mb,
        ),
        MetricDefinition(
            "DiskAvailMegabytes",
            "Count",
            "Disk space available on a node, in megabytes",
            _NODE_DIMS,
            lambda s: s.disk_available_mb,
        ),
        MetricDefinition(
            "Active Nodes",
            "Count",
            "Number of nodes running a job",
            ("Scenario", "ClusterName"),
            lambda s: 1.0 if s.run_id else 0.0,
            "Total",
            count=True,
        ),
    ),
    # A VM's host metrics: no dimension of their own, and no disk-space figure (that needs the
    # guest's Azure Monitor Agent, which the emulator does not have).
    VM_TYPE.lower(): (
        MetricDefinition(
            "Percentage CPU",
            "Percent",
            "The percentage of allocated compute units that are currently in use by the VM",
            (),
            lambda s: s.cpu,
        ),
        MetricDefinition(
            "Available Memory Percentage",
            "Percent",
            "Amount of physical memory, in percentage, immediately available for allocation",
            (),
            lambda s: round(100.0 - s.memory, 2),
        ),
    ),
    # A Batch account's node counts over all its pools, with no dimension (as Azure's): Batch
    # publishes no per-node CPU, memory or disk to Azure Monitor.
    BATCH_TYPE.lower(): (
        _batch_count(
            "CoreCount",
            "Total number of dedicated cores in the batch account",
            lambda s: 0.0 if s.low_priority else float(s.vcpus),
        ),
        _batch_count(
            "LowPriorityCoreCount",
            "Total number of Spot/low-priority cores in the batch account",
            lambda s: float(s.vcpus) if s.low_priority else 0.0,
        ),
        _batch_count(
            "TotalNodeCount",
            "Total number of dedicated nodes in the batch account",
            lambda s: 0.0 if s.low_priority else 1.0,
        ),
        _batch_count(
            "TotalLowPriorityNodeCount",
            "Total number of Spot/low-priority nodes in the batch account",
            lambda s: 1.0 if s.low_priority else 0.0,
        ),
        *(
            _batch_count(f"{name}NodeCount", description, _in_state(name.lower()))
            for name, description in (
                ("Creating", "Number of nodes being created"),
                ("Starting", "Number of nodes starting"),
                ("WaitingForStartTask", "Number of nodes waiting for the Start Task to complete"),
                ("StartTaskFailed", "Number of nodes where the Start Task has failed"),
                ("Idle", "Number of idle nodes"),
                ("Running", "Number of running nodes"),
                ("Rebooting", "Number of rebooting nodes"),
                ("Unusable", "Number of unusable nodes"),
                ("LeavingPool", "Number of nodes leaving the Pool"),
            )
        ),
    ),
}

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_SUBSCRIPTION = re.compile(r"^/?subscriptions/[^/]+$", re.IGNORECASE)
_CLAUSE = re.compile(r"^\s*(?P<dim>[\w. ]+?)\s+eq\s+'(?P<value>[^']*)'\s*$", re.IGNORECASE)


def parse_duration(text: str, name: str) -> float:
    m = _DURATION.match(text.strip())
    if not m or not any(m.groupdict().values()):
        raise bad_request("BadRequest", f"Invalid {name} '{text}': expected an ISO 8601 duration.")
    d, h, mi, s = (float(m.group(k) or 0) for k in ("d", "h", "m", "s"))
    return d * 86400 + h * 3600 + mi * 60 + s


def _parse_time(text: str) -> float:
    try:
        return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise bad_request("BadRequest", f"Invalid timespan bound '{text}'.") from None


def parse_timespan(text: str | None, now: float) -> tuple[float, float]:
    if not text:
        return now - 3600, now
    if "/" in text:
        start, end = text.split("/", 1)
        if end.upper().startswith("P"):
            begin = _parse_time(start)
            return begin, begin + parse_duration(end, "timespan")
        return _parse_time(start), _parse_time(end)
    return now - parse_duration(text, "timespan"), now


def parse_filter(text: str | None) -> tuple[dict[str, str], dict[str, set[str]]]:
    """``Dim eq 'v' and Dim2 eq '*' and (Dim3 eq 'a' or Dim3 eq 'b')`` as {dim (lower case):
    value}, where an ``or`` of one dimension's values splits by it ('*'), and the values each
    such dimension is limited to (lower case)."""
    if not text:
        return {}, {}
    found: dict[str, str] = {}
    only: dict[str, set[str]] = {}
    for group in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        alternatives = [_clause(c) for c in re.split(r"\s+or\s+", group, flags=re.IGNORECASE)]
        dims = {dim for dim, _value in alternatives}
        if len(dims) > 1:
            raise bad_request(
                "BadRequest", f"An `or` in $filter must name one dimension: '{group}'."
            )
        dim = dims.pop()
        if len(alternatives) == 1:
            found[dim] = alternatives[0][1]
        else:
            found[dim] = "*"
            only[dim] = {value.lower() for _dim, value in alternatives}
    return found, only


def _top(text: str | None) -> int:
    if text is None:
        return 10
    if not text.isdigit() or int(text) < 1:
        raise bad_request("BadRequest", f"top must be a positive whole number, not '{text}'.")
    return int(text)


def _clause(text: str) -> tuple[str, str]:
    m = _CLAUSE.match(text.strip("() "))
    if not m:
        raise bad_request(
            "BadRequest",
            f"Unsupported $filter clause '{text}': localazure takes `Dimension eq 'value'` "
            "clauses joined by `and`, and one dimension's clauses joined by `or`.",
        )
    return m.group("dim").strip().lower(), m.group("value")


def aggregate(values: list[float], how: str) -> float:
    if how == "Average":
        return sum(values) / len(values)
    if how == "Minimum":
        return min(values)
    if how == "Maximum":
        return max(values)
    if how == "Total":
        return sum(values)
    return float(len(values))


def _aggregate(values: list[float], how: str, minutes: float | None) -> float:
    if minutes is not None and how in ("Total", "Count"):
        # Azure emits a count once a minute: the bucket's latest count stands for each emission
        return (values[-1] if how == "Total" else 1.0) * minutes
    return aggregate(values, how)


def definitions_for(resource: dict[str, Any]) -> tuple[MetricDefinition, ...]:
    return DEFINITIONS.get(resource["type"].lower(), ())


def samples_of(figures: NodeFigures, resource: dict[str, Any], start: float, end: float):
    """The samples that belong to a resource (a workspace: the nodes of its computes; a VM:
    its own node)."""
    own = resource["id"].lower()
    return [
        s
        for s in figures.samples(start, end)
        if s.compute_id.lower() == own or s.compute_id.lower().startswith(own + "/")
    ]


def series(
    samples: Iterable[Sample],
    definition: MetricDefinition,
    dims: dict[str, str],
    start: float,
    end: float,
    grain: float,
    how: str,
) -> list[dict[str, Any]]:
    """The timeseries of one metric: one per combination of the split dimensions."""
    unknown = [d for d in dims if d not in {x.lower() for x in definition.dimensions}]
    if unknown:
        raise bad_request(
            "BadRequest",
            f"Metric {definition.name} has no dimension '{unknown[0]}'; its dimensions are "
            f"{list(definition.dimensions)}.",
        )
    split = [d for d, v in dims.items() if v == "*"]
    fixed = {d: v for d, v in dims.items() if v != "*"}
    groups: dict[tuple[str, ...], dict[float, list[float]]] = {}
    instants: dict[tuple[tuple[str, ...], float], float] = {}
    for s in samples:
        if any((_DIM_VALUE[d](s) or "").lower() != v.lower() for d, v in fixed.items()):
            continue
        key = tuple(_DIM_VALUE[d](s) or "" for d in split)
        if definition.count:
            instants[key, s.at] = instants.get((key, s.at), 0.0) + definition.value(s)
            continue
        bucket = start + ((s.at - start) // grain) * grain
        groups.setdefault(key, {}).setdefault(bucket, []).append(definition.value(s))
    for (key, at), total in instants.items():
        bucket = start + ((at - start) // grain) * grain
        groups.setdefault(key, {}).setdefault(bucket, []).append(total)
    # A count's Total over a grain is its emissions' sum: one a minute, at least one.
    minutes = max(1.0, grain / 60.0) if definition.count else None
    names = {d.lower(): d for d in definition.dimensions}
    out = []
    for key, buckets in sorted(groups.items()):
        out.append(
            {
                # Every dimension the filter names, as Azure answers.
                "metadatavalues": [
                    {"name": {"value": names[d], "localizedValue": names[d]}, "value": v}
                    for d, v in [*fixed.items(), *zip(split, key, strict=True)]
                ],
                "data": [
                    {"timeStamp": _iso(t), how.lower(): round(_aggregate(v, how, minutes), 4)}
                    for t, v in sorted(buckets.items())
                ],
            }
        )
    return out


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration_text(seconds: float) -> str:
    return f"PT{int(seconds // 60)}M" if seconds % 60 == 0 else f"PT{seconds:g}S"


def register(router: Router, ctx: Context, figures: NodeFigures) -> None:
    def resource_of(scope: str) -> dict[str, Any]:
        resource = ctx.store.get_resource(scope)
        if resource is None:
            raise not_found("ResourceNotFound", f"The resource '{scope}' was not found.")
        return resource

    async def metric_definitions(request: Request, scope: str) -> Response:
        require_api_version(request)
        resource = resource_of(scope)
        items = [
            {
                "id": f"{resource['id']}/providers/microsoft.insights/metricdefinitions/{d.name}",
                "resourceId": resource["id"],
                "namespace": resource["type"],
                "name": {"value": d.name, "localizedValue": d.name},
                "displayDescription": d.description,
                "category": "Resource",
                "isDimensionRequired": False,
                "unit": d.unit,
                "primaryAggregationType": d.primary,
                "supportedAggregationTypes": list(AGGREGATIONS),
                "metricAvailabilities": [
                    {"timeGrain": "PT1M", "retention": "P93D"},
                    {"timeGrain": "PT1H", "retention": "P93D"},
                ],
                "dimensions": [{"value": x, "localizedValue": x} for x in d.dimensions],
            }
            for d in definitions_for(resource)
        ]
        return json_response({"value": items})

    async def metrics(request: Request, scope: str) -> Response:
        require_api_version(request)
        q = request.query_params
        subscription = _SUBSCRIPTION.match(scope)
        resource = (
            _namespace_scope(q, "/" + scope.strip("/")) if subscription else resource_of(scope)
        )
        now = ctx.clock()
        start, end = parse_timespan(q.get("timespan"), now)
        grain = parse_duration(q.get("interval") or "PT1M", "interval")
        if grain < 1:
            raise bad_request("BadRequest", "interval must be at least one second.")
        hows = [a.strip().capitalize() for a in (q.get("aggregation") or "Average").split(",")]
        for how in hows:
            if how not in AGGREGATIONS:
                raise bad_request("BadRequest", f"Invalid aggregation '{how}'.")
        known = {d.name.lower(): d for d in definitions_for(resource)}
        if subscription:
            known = {
                k: replace(d, dimensions=(RESOURCE_ID_DIM, *d.dimensions)) for k, d in known.items()
            }
        names = [n.strip() for n in (q.get("metricnames") or "").split(",") if n.strip()]
        chosen = []
        for name in names or [d.name for d in known.values()][:1]:
            definition = known.get(name.lower())
            if definition is None:
                raise bad_request(
                    "BadRequest",
                    f"Failed to find metric configuration for provider: {resource['type']}, "
                    f"resource Id: {resource['id']}, metric: {name}. Valid metrics: "
                    + ",".join(d.name for d in known.values()),
                )
            chosen.append(definition)
        dims, only = parse_filter(q.get("$filter"))
        # As Azure: a filtered query answers at most ``top`` series (default 10).
        top = _top(q.get("top")) if q.get("$filter") else None
        if subscription:
            samples = _in_region(figures.samples(start, end), resource)
        else:
            samples = samples_of(figures, resource, start, end)
        samples = [
            s
            for s in samples
            if all((_DIM_VALUE[d](s) or "").lower() in values for d, values in only.items())
        ]
        value = []
        for definition in chosen:
            how = hows[0] if len(hows) == 1 else definition.primary
            value.append(
                {
                    "id": f"{resource['id']}/providers/Microsoft.Insights/metrics/{definition.name}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": definition.name, "localizedValue": definition.name},
                    "displayDescription": definition.description,
                    "unit": definition.unit,
                    "errorCode": "Success",
                    "timeseries": series(samples, definition, dims, start, end, grain, how)[:top],
                }
            )
        return json_response(
            {
                "cost": 0,
                "timespan": f"{_iso(start)}/{_iso(end)}",
                "interval": _duration_text(grain),
                "namespace": resource["type"],
                "resourceregion": resource.get("location"),
                "value": value,
            }
        )

    def _namespace_scope(q: Any, subscription_id: str) -> dict[str, Any]:
        """A multi-resource query: every resource of ``metricnamespace`` in ``region`` of the
        subscription, its series split by ``Microsoft.ResourceId``."""
        namespace, region = q.get("metricnamespace"), q.get("region")
        if not namespace or not region:
            raise bad_request(
                "BadRequest",
                "A metrics query at subscription scope needs the region and metricnamespace "
                "parameters.",
            )
        if namespace.lower() not in DEFINITIONS:
            raise bad_request(
                "BadRequest", f"Metric namespace '{namespace}' is not supported at this scope."
            )
        return {"id": subscription_id, "type": namespace, "location": region.lower()}

    def _in_region(samples: list[Sample], scope: dict[str, Any]) -> list[Sample]:
        prefix = scope["id"].lower() + "/"
        kept, resources = [], {}
        for sample in samples:
            key = sample.compute_id.lower()
            if key not in resources:
                found = ctx.store.get_resource(sample.compute_id)
                resources[key] = (
                    found is not None
                    and key.startswith(prefix)
                    and (
                        found["type"].lower() == scope["type"].lower()
                        and found["location"].lower().replace(" ", "") == scope["location"]
                    )
                )
            if resources[key]:
                kept.append(sample)
        return kept

    base = "{scope:path}/providers/Microsoft.Insights"
    router.add(
        "GET",
        base + "/metricDefinitions",
        metric_definitions,
        action=DEFINITIONS_READ,
        scope="{scope}",
    )
    router.add("GET", base + "/metrics", metrics, action=READ, scope="{scope}")
