"""Metric alert rules (``Microsoft.Insights/metricAlerts``, 2018-03-01) and action groups
(``Microsoft.Insights/actionGroups``, 2023-01-01 and earlier), as azcollection's
``azure_rm_monitormetricalerts`` and ``azure_rm_monitoractiongroups`` create them, and the
evaluation of an enabled rule on the emulator's metrics: every ``evaluationFrequency`` the
rule's static-threshold criteria are checked over its ``windowSize`` for each series its
dimensions split; a series that meets them all fires once (a POST in the common alert schema
to every webhook receiver of the rule's action groups) and, with ``autoMitigate``, is resolved
when it no longer does. Webhooks are called only on loopback addresses (the emulator never
reaches outside the machine); a failed call is kept in the rule's ``notifications``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import uuid
from typing import Any
from urllib.parse import urlparse

import requests
from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    provider_id,
    resource_or_404,
    system_data,
)
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.monitor import metrics as M
from localazure.monitor.figures import NodeFigures

log = logging.getLogger("localazure.monitor")

NAMESPACE = "Microsoft.Insights"
ALERT_TYPE = f"{NAMESPACE}/metricAlerts"
GROUP_TYPE = f"{NAMESPACE}/actionGroups"
FIRED_KIND = "monitor-alert-fired"
NOTIFY_KIND = "monitor-alert-notification"
OPERATORS = {
    "greaterthan": lambda v, t: v > t,
    "greaterthanorequal": lambda v, t: v >= t,
    "lessthan": lambda v, t: v < t,
    "lessthanorequal": lambda v, t: v <= t,
    "equals": lambda v, t: v == t,
}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_rule(props: dict[str, Any]) -> None:
    criteria = (props.get("criteria") or {}).get("allOf") or []
    if not props.get("scopes"):
        raise bad_request("BadRequest", "A metric alert needs at least one scope.")
    if not criteria:
        raise bad_request("BadRequest", "A metric alert needs criteria.allOf.")
    for criterion in criteria:
        if (criterion.get("operator") or "").lower() not in OPERATORS:
            raise bad_request("BadRequest", f"Unsupported operator {criterion.get('operator')!r}.")
        if criterion.get("threshold") is None or not criterion.get("metricName"):
            raise bad_request("BadRequest", "Each criterion needs metricName and threshold.")
    for name in ("evaluationFrequency", "windowSize"):
        M.parse_duration(props.get(name) or "PT1M", name)


def register(router: Router, ctx: Context) -> None:
    in_group = in_resource_group(ctx)

    def crud(type_name: str, check: Any, created: int) -> None:
        """``created``: the status of a PUT that creates (metricAlerts answers 200 either way,
        as its REST spec says; actionGroups 201)."""
        short = type_name.split("/", 1)[1]

        async def put(request: Request, sub: str, rg: str, name: str) -> Response:
            require_api_version(request)
            body = await json_body(request)
            props = body.get("properties") or {}
            check(props)
            rid = provider_id(ctx, request.state.parent["name"], NAMESPACE, short, name)
            existing = ctx.store.get_resource(rid)
            resource = {
                "id": rid,
                "name": name,
                "type": type_name,
                "location": body.get("location") or "global",
                "tags": body.get("tags") or {},
                "properties": props,
                "systemData": system_data(existing, request.state.caller),
            }
            ctx.store.put_resource(resource)
            return json_response(resource, 200 if existing else created)

        async def get(request: Request, sub: str, rg: str, name: str) -> Response:
            require_api_version(request)
            rid = provider_id(ctx, rg, NAMESPACE, short, name)
            return json_response(resource_or_404(ctx, rid, type_name, name, rg))

        async def delete(request: Request, sub: str, rg: str, name: str) -> Response:
            require_api_version(request)
            existing = ctx.store.get_resource(provider_id(ctx, rg, NAMESPACE, short, name))
            if existing is None:
                return empty(204)
            delete_tree(ctx, existing["id"])
            return empty(200)

        async def list_group(request: Request, sub: str, rg: str) -> Response:
            require_api_version(request)
            group = request.state.parent
            return json_response(
                list_page(ctx.store.list_resources(type=type_name, parent=group["id"]))
            )

        prefix = f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{type_name}"
        scope = "{parent}/providers/" + type_name + "/{name}"
        for method, handler, verb in (
            ("PUT", put, "write"),
            ("GET", get, "read"),
            ("DELETE", delete, "delete"),
        ):
            router.add(
                method,
                prefix + "/{name}",
                handler,
                parent=in_group,
                action=f"{type_name}/{verb}",
                scope=scope,
            )
        router.add("GET", prefix, list_group, parent=in_group, action=f"{type_name}/read")

    crud(ALERT_TYPE, _check_rule, 200)
    crud(GROUP_TYPE, lambda props: None, 201)

    async def notifications(request: Request, sub: str, rg: str, name: str) -> Response:
        """Admin view: what the rule's evaluation sent (``/_localazure``-style, under the rule)."""
        rid = provider_id(ctx, rg, NAMESPACE, "metricAlerts", name)
        return json_response({"value": ctx.store.values(NOTIFY_KIND, rid.lower() + "|")})

    router.add(
        "GET",
        "/_localazure/monitor/subscriptions/{sub}/resourceGroups/{rg}/metricAlerts/{name}/notifications",
        notifications,
        auth="none",
    )


class RuleEvaluator:
    """Evaluates every enabled metric alert rule on its frequency (called after each sample)."""

    def __init__(self, ctx: Context, figures: NodeFigures) -> None:
        self.ctx = ctx
        self.figures = figures
        self._due: dict[str, float] = {}

    def __call__(self, now: float) -> None:
        for rule in self.ctx.store.list_resources(type=ALERT_TYPE):
            props = rule["properties"]
            if props.get("enabled") is False:
                continue
            key = rule["id"].lower()
            if now < self._due.get(key, 0.0):
                continue
            self._due[key] = now + M.parse_duration(props.get("evaluationFrequency") or "PT1M", "f")
            self._evaluate(rule, now)

    def _evaluate(self, rule: dict[str, Any], now: float) -> None:
        props = rule["properties"]
        window = M.parse_duration(props.get("windowSize") or "PT5M", "windowSize")
        criteria = props["criteria"]["allOf"]
        met: dict[str, dict[str, Any]] = {}
        for scope in props["scopes"]:
            resource = self.ctx.store.get_resource(scope)
            if resource is None:
                continue
            known = {d.name.lower(): d for d in M.definitions_for(resource)}
            samples = M.samples_of(self.figures, resource, now - window, now + 1)
            per_criterion = []
            for criterion in criteria:
                definition = known.get(criterion["metricName"].lower())
                if definition is None:
                    per_criterion.append({})
                    continue
                dims = {
                    d["name"].lower(): (d.get("values") or ["*"])[0]
                    for d in criterion.get("dimensions") or []
                }
                how = (criterion.get("timeAggregation") or "Average").capitalize()
                test = OPERATORS[criterion["operator"].lower()]
                hits = {}
                for ts in M.series(
                    samples, definition, dims, now - window, now + 1, window + 1, how
                ):
                    values = [p[how.lower()] for p in ts["data"]]
                    # The window is covered: the series has samples from its start on.
                    if values and test(values[0], float(criterion["threshold"])):
                        label = ",".join(
                            f"{m['name']['value']}={m['value']}" for m in ts["metadatavalues"]
                        )
                        hits[label] = {
                            "value": values[0],
                            "criterion": criterion,
                            "dimensions": ts["metadatavalues"],
                        }
                per_criterion.append(hits)
            common = set.intersection(*(set(h) for h in per_criterion)) if per_criterion else set()
            for label in common:
                met[f"{scope.lower()}|{label}"] = {"scope": scope, **per_criterion[0][label]}
        self._settle(rule, met, now)

    def _settle(self, rule: dict[str, Any], met: dict[str, dict[str, Any]], now: float) -> None:
        prefix = rule["id"].lower() + "|"
        fired = {k[len(prefix) :]: v for k, v in self.ctx.store.items(FIRED_KIND, prefix)}
        for key, hit in met.items():
            if key not in fired:
                alert_id = uuid.uuid4().hex
                self.ctx.store.put(
                    FIRED_KIND, prefix + key, {"id": alert_id, "at": now, "hit": hit}
                )
                self._notify(rule, alert_id, "Fired", hit, now, now)
        if rule["properties"].get("autoMitigate", True):
            for key, record in fired.items():
                if key not in met:
                    self.ctx.store.delete(FIRED_KIND, prefix + key)
                    self._notify(rule, record["id"], "Resolved", record["hit"], record["at"], now)

    def _notify(self, rule, alert_id, condition, hit, fired_at, now) -> None:
        props = rule["properties"]
        body = {
            "schemaId": "azureMonitorCommonAlertSchema",
            "data": {
                "essentials": {
                    "alertId": f"{hit['scope']}/providers/Microsoft.AlertsManagement/alerts/{alert_id}",
                    "alertRule": rule["name"],
                    "severity": f"Sev{props.get('severity', 3)}",
                    "signalType": "Metric",
                    "monitorCondition": condition,
                    "monitoringService": "Platform",
                    "alertTargetIDs": [hit["scope"].lower()],
                    "originAlertId": alert_id,
                    "firedDateTime": _iso(fired_at),
                    **({"resolvedDateTime": _iso(now)} if condition == "Resolved" else {}),
                    "description": props.get("description") or "",
                    "essentialsVersion": "1.0",
                    "alertContextVersion": "1.0",
                },
                "alertContext": {
                    "properties": None,
                    "conditionType": "SingleResourceMultipleMetricCriteria",
                    "condition": {
                        "windowSize": props.get("windowSize"),
                        "allOf": [
                            {
                                "metricName": hit["criterion"]["metricName"],
                                "metricNamespace": hit["criterion"].get("metricNamespace"),
                                "operator": hit["criterion"]["operator"],
                                "threshold": str(hit["criterion"]["threshold"]),
                                "timeAggregation": hit["criterion"].get("timeAggregation"),
                                "dimensions": [
                                    {"name": d["name"]["value"], "value": d["value"]}
                                    for d in hit["dimensions"]
                                ],
                                "metricValue": hit["value"],
                            }
                        ],
                    },
                },
            },
        }
        for action in props.get("actions") or []:
            group = self.ctx.store.get_resource(action.get("actionGroupId") or "")
            if group is None or group["properties"].get("enabled") is False:
                continue
            for receiver in group["properties"].get("webhookReceivers") or []:
                self._post(rule, receiver, body, now)

    def _post(self, rule, receiver, body, now) -> None:
        url = receiver.get("serviceUri") or ""
        record = {
            "at": now,
            "receiver": receiver.get("name"),
            "condition": body["data"]["essentials"]["monitorCondition"],
            "status": None,
            "error": None,
        }
        host = urlparse(url).hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            record["error"] = "localazure calls webhooks on loopback addresses only"
        else:
            try:
                record["status"] = requests.post(url, json=body, timeout=10).status_code
            except requests.RequestException as exc:
                record["error"] = type(exc).__name__
        key = f"{rule['id'].lower()}|{now:.3f}|{receiver.get('name')}"
        self.ctx.store.put(NOTIFY_KIND, key, record)
