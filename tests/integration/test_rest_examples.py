"""Replays Azure's published REST examples (azure-rest-api-specs, vendored with their licence in
``tests/rest_examples/``) against the emulator and reports conformance per operation: the answer's
status must be one the example lists, and every key of the example's response body must be in
the emulator's (recursively through objects; values, list contents and keys that depend on data
the emulator does not hold are not compared). A new emulated operation adds its examples to
``tests/rest_examples/operations.json``; the floor below only rises."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

EXAMPLES = Path(__file__).resolve().parents[1] / "rest_examples"
MANIFEST = json.loads((EXAMPLES / "operations.json").read_text())["operations"]
# Operations that conform today; raise it with each fix, never lower it.
CONFORMANCE_FLOOR = 9
# Maps whose keys are the example's data (tag names, identity ids), not part of the shape: not
# compared.
_DATA_MAPS = {"tags", "userAssignedIdentities"}
_SUBSCRIPTION = re.compile(r"(/?subscriptions/)[^/\"]+", re.IGNORECASE)


def missing_keys(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    """Keys of ``expected`` (an example body) that ``actual`` lacks, as dotted paths."""
    if not isinstance(expected, dict) or not isinstance(actual, dict):
        return []
    missing = []
    for key, value in expected.items():
        path = f"{prefix}{key}"
        if key in _DATA_MAPS:
            continue
        if key not in actual:
            missing.append(path)
        else:
            missing += missing_keys(value, actual[key], path + ".")
    return missing


class SetupFailed(Exception):
    """What an example needs could not be created (itself a deviation of the emulator)."""


class Replay:
    def __init__(self, emulator):
        self.emulator = emulator
        self.sub = emulator.subscription_id
        policy = ARMChallengeAuthenticationPolicy(
            emulator.credential(), emulator.endpoint + "/.default"
        )
        self.client = ARMPipelineClient(base_url=emulator.endpoint, policies=[policy])
        self.role_guid = str(uuid.uuid4())

    def send(self, method: str, path: str, api_version: str, body: Any = None):
        url = f"{self.emulator.endpoint}/{path.lstrip('/')}?api-version={api_version}"
        return self.client.send_request(HttpRequest(method, url, json=body))

    def localise(self, text: str) -> str:
        """The example's text with every subscription replaced by the emulator's."""
        return _SUBSCRIPTION.sub(lambda m: m.group(1) + self.sub, text)

    def prepare(self, needs: list[str], params: dict[str, Any]) -> None:
        in_scope = re.search(r"resourceGroups/([^/]+)", str(params.get("scope", "")), re.I)
        group = params.get("resourceGroupName") or (in_scope.group(1) if in_scope else "examples")
        base = f"/subscriptions/{self.sub}/resourceGroups/{group}"
        creates = {
            "group": (base, "2024-03-01", {"location": "eastus"}),
            "identity": (
                f"{base}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
                f"{params.get('resourceName')}",
                "2023-01-31",
                {"location": "eastus"},
            ),
            "registry": (
                f"{base}/providers/Microsoft.ContainerRegistry/registries/"
                f"{params.get('registryName')}",
                "2023-07-01",
                {"location": "westus", "sku": {"name": "Standard"}},
            ),
            "workspace": (
                f"{base}/providers/Microsoft.MachineLearningServices/workspaces/"
                f"{params.get('workspaceName')}",
                "2024-10-01",
                {"location": "eastus", "identity": {"type": "SystemAssigned"}},
            ),
            "custom_role": (
                f"/subscriptions/{self.sub}/providers/Microsoft.Authorization/roleDefinitions/"
                f"{self.role_guid}",
                "2022-04-01",
                {
                    "properties": {
                        "roleName": f"rest example {self.role_guid}",
                        "assignableScopes": [f"/subscriptions/{self.sub}"],
                        "permissions": [{"actions": ["*/read"]}],
                    }
                },
            ),
        }
        for need in needs:
            if need in creates:
                path, api, body = creates[need]
                response = self.send("PUT", path, api, body)
                if response.status_code >= 300:
                    raise SetupFailed(f"creating its {need} failed: {response.text()[:300]}")

    def request(self, entry: dict[str, Any], example: dict[str, Any]):
        params = dict(example["parameters"])
        if "role_ids" in entry["needs"]:
            params["scope"] = f"subscriptions/{self.sub}"
            params["roleDefinitionId"] = str(uuid.uuid4())
            params["roleId"] = (
                f"/subscriptions/{self.sub}/providers/Microsoft.Authorization/roleDefinitions/"
                f"{self.role_guid}"
            )
        self.prepare(entry["needs"], params)
        path = entry["path"]
        for name, value in params.items():
            if isinstance(value, str):
                path = path.replace("{" + name + "}", value)
        path = self.localise(path.replace("{subscriptionId}", self.sub))
        body = params.get(entry.get("body", ""))
        if entry["operation"] == "RoleDefinitions_CreateOrUpdate":
            flat = body["roleDefinition"]
            body = {
                "properties": {k: v for k, v in flat.items() if k not in ("id", "type", "name")}
            }
        if body is not None:
            text = self.localise(json.dumps(body))
            for placeholder, value in entry.get("substitute", {}).items():
                text = text.replace(placeholder, value)
            body = json.loads(text)
        return self.send(entry["method"], path, params["api-version"], body)


def conformance(emulator) -> dict[str, list[str]]:
    """operation -> its deviations (empty when it conforms)."""
    replay = Replay(emulator)
    report = {}
    for entry in MANIFEST:
        example = json.loads((EXAMPLES / entry["example"]).read_text())
        try:
            response = replay.request(entry, example)
        except SetupFailed as failed:
            report[entry["operation"]] = [str(failed)]
            continue
        deviations = []
        expected = example["responses"]
        if str(response.status_code) not in expected:
            deviations.append(
                f"status {response.status_code}, Azure answers {'/'.join(expected)}: "
                f"{response.text()[:300]}"
            )
        else:
            want = expected[str(response.status_code)].get("body")
            got = response.json() if response.text() else None
            deviations += [f"missing key {k}" for k in missing_keys(want, got)]
        report[entry["operation"]] = deviations
    return report


def test_published_examples_conform(azure, capsys):
    report = conformance(azure)
    conforming = [op for op, deviations in report.items() if not deviations]
    with capsys.disabled():
        print(f"\nREST examples: {len(conforming)} of {len(report)} operations conform")
        for operation, deviations in report.items():
            for deviation in deviations:
                print(f"  {operation}: {deviation}")
    assert len(conforming) >= CONFORMANCE_FLOOR, report


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["operation"] for e in MANIFEST])
def test_every_example_file_is_vendored_with_its_licence(entry):
    assert (EXAMPLES / entry["example"]).is_file()
    assert "MIT License" in (EXAMPLES / "LICENSE").read_text()
