"""Azure Monitor in localazure through the real clients: node metrics (metricDefinitions,
metrics with timespan, interval, aggregation and dimension filters) as azure-mgmt-monitor reads
them, and a metric alert rule with its action group made by azcollection's modules, evaluated by
the emulator, which calls the action group's webhook on loopback."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from aml_setup import build
from ansible_module import run_module
from azure.mgmt.monitor import MonitorManagementClient
from monitor_helpers import WebhookReceiver, wait_for

from localazure.workload.task_model import list_tasks

pytestmark = pytest.mark.integration

SLOW_JOB_ENV = {"WAA_STANDIN_TIME_SCALE": "0.4"}


def test_node_metrics_and_a_metric_alert_rule_calling_its_webhook(azure):
    world = build(azure, cluster=dict(max_nodes=1))
    hook = WebhookReceiver()
    try:
        group = run_module(
            azure,
            "azure.azcollection.azure_rm_monitoractiongroups",
            json.dumps(
                {
                    "name": "node-health",
                    "resource_group": world.resource_group,
                    "location": "Global",
                    "group_short_name": "nodehealth",
                    "webhook_receivers": [
                        {"name": "ops", "service_uri": hook.url, "use_common_alert_schema": True}
                    ],
                }
            ),
        )
        assert group["changed"], group
        rule = run_module(
            azure,
            "azure.azcollection.azure_rm_monitormetricalerts",
            json.dumps(
                {
                    "name": "compute-node-unhealthy",
                    "resource_group": world.resource_group,
                    "location": "Global",
                    "scopes": [world.workspace_id],
                    "severity": 1,
                    "enabled": True,
                    "evaluation_frequency": "PT1S",
                    "window_size": "PT2S",
                    "auto_mitigate": True,
                    "target_resource_type": "Microsoft.MachineLearningServices/workspaces",
                    "actions": [{"action_group_id": group["actiongroup"]["id"]}],
                    "criteria": {
                        "odata_type": "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria",
                        "all_of": [
                            {
                                "criterion_type": "StaticThresholdCriterion",
                                "name": "cpu",
                                "metric_name": "CpuUtilizationPercentage",
                                "operator": "GreaterThan",
                                "threshold": 95,
                                "time_aggregation": "Average",
                                "dimensions": [
                                    {"name": "InstanceId", "operator": "Include", "values": ["*"]}
                                ],
                            }
                        ],
                    },
                }
            ),
        )
        assert rule["changed"], rule
        azure.admin(
            "POST", "ml/faults", {"fault": "overload", "metric": "cpu", "job": "metrics-0001"}
        )
        tier = world.tier("metrics", job_environment=SLOW_JOB_ENV)
        handle = tier.submit("metrics-0001", [t for _, t in list_tasks()[:2]])

        monitor = azure.mgmt_client(MonitorManagementClient)
        names = {d.name.value for d in monitor.metric_definitions.list(world.workspace_id)}
        assert {"CpuUtilizationPercentage", "CpuMemoryUtilizationPercentage"} <= names

        def hot_point():
            result = monitor.metrics.list(
                world.workspace_id,
                timespan="PT5M",
                interval=timedelta(seconds=1),
                metricnames="CpuUtilizationPercentage,CpuMemoryUtilizationPercentage",
                aggregation="Average,Maximum",
                filter="ComputeName eq 'waa' and InstanceId eq '*' and RunId eq '*'",
            )
            cpu = next(m for m in result.value if m.name.value == "CpuUtilizationPercentage")
            for series in cpu.timeseries:
                dims = {m.name.value: m.value for m in series.metadatavalues}
                if dims.get("RunId") == handle and any((p.average or 0) > 95 for p in series.data):
                    return dims
            return None

        dims = wait_for(hot_point, 30, "a CPU point over 95% for the faulted job")
        assert dims["ComputeName"] == "waa" and dims["InstanceId"] in json.dumps(world.nodes())
        fired = wait_for(
            lambda: [
                b for b in hook.bodies if b["data"]["essentials"]["monitorCondition"] == "Fired"
            ],
            30,
            "the action group's webhook",
        )
        essentials = fired[0]["data"]["essentials"]
        assert essentials["alertRule"] == "compute-node-unhealthy"
        assert essentials["severity"] == "Sev1"
        condition = fired[0]["data"]["alertContext"]["condition"]["allOf"][0]
        assert condition["metricName"] == "CpuUtilizationPercentage"
        assert condition["metricValue"] > 95
        # The job ends, the node cools: the alert resolves (autoMitigate).
        world.wait_terminal([handle], timeout=60)
        wait_for(
            lambda: any(
                b["data"]["essentials"]["monitorCondition"] == "Resolved" for b in hook.bodies
            ),
            30,
            "the resolved notification",
        )
        assert len(fired) == 1
    finally:
        hook.close()
