"""The worker reads its secrets itself: ``worker/waa_worker.py`` as a process with a workload's
managed-identity environment (App Service protocol, as the emulator's AML containers get it),
against a real vault of the emulator. The WAA client (a small script) proves it received the
value without printing it; the value is in no output and no event."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.resource import ResourceManagementClient

from localazure.identity.principals import DEV_SP_OBJECT_ID

pytestmark = pytest.mark.integration

WORKER = Path(__file__).resolve().parents[2] / "worker" / "waa_worker.py"
GROUP, LOCATION, VAULT = "worker-secrets", "eastus", "worker-kv"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
# A WAA client stand-in: succeeds only when OPENAI_API_KEY has the expected digest.
CLIENT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    args = sys.argv[1:]
    meta = json.load(open(args[args.index("--test_all_meta_path") + 1]))
    result_dir = args[args.index("--result_dir") + 1]
    task = next(iter(meta.values()))[0]
    got = hashlib.sha256(os.environ.get("OPENAI_API_KEY", "").encode()).hexdigest()
    ok = got == os.environ["EXPECTED_DIGEST"]
    os.makedirs(os.path.join(result_dir, task), exist_ok=True)
    open(os.path.join(result_dir, task, "result.txt"), "w").write("1.0" if ok else "0.0")
    print("client saw the key:", ok)
    """
)


def _grant(azure, scope: str, principal_id: str, role: str) -> None:
    definition = (
        f"/subscriptions/{azure.subscription_id}/providers/Microsoft.Authorization/"
        f"roleDefinitions/{role}"
    )
    azure.mgmt_client(AuthorizationManagementClient).role_assignments.create(
        scope, str(uuid.uuid4()), {"role_definition_id": definition, "principal_id": principal_id}
    )


@pytest.fixture
def setup(azure, tmp_path):
    resources = azure.mgmt_client(ResourceManagementClient)
    resources.resource_groups.create_or_update(GROUP, {"location": LOCATION})
    vault = (
        azure.mgmt_client(KeyVaultManagementClient)
        .vaults.begin_create_or_update(
            GROUP,
            VAULT,
            {
                "location": LOCATION,
                "properties": {
                    "tenant_id": azure.settings.tenant_id,
                    "sku": {"family": "A", "name": "standard"},
                    "enable_rbac_authorization": True,
                },
            },
        )
        .result()
    )
    _grant(azure, vault.id, DEV_SP_OBJECT_ID, SECRETS_OFFICER)
    identity = resources.resources.begin_create_or_update_by_id(
        f"/subscriptions/{azure.subscription_id}/resourceGroups/{GROUP}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/node",
        "2023-01-31",
        {"location": LOCATION},
    ).result()
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "meta.json").write_text(json.dumps({"chrome": ["task-1"]}))
    return vault, identity.properties


def _run_worker(
    azure, tmp_path, identity: dict, canary: str, names: dict
) -> subprocess.CompletedProcess:
    workload = azure.admin(
        "POST", "workload-identities", {"principalIds": [identity["principalId"]]}
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LOCALAZURE_DNS": azure.env["LOCALAZURE_DNS"],
        "LOCALAZURE_ENDPOINT": azure.env["LOCALAZURE_ENDPOINT"],
        "SSL_CERT_FILE": str(azure.settings.ca_bundle),
        "DEFAULT_IDENTITY_CLIENT_ID": identity["clientId"],
        "WAA_SECRETS_VAULT_URL": f"https://{VAULT}.vault.azure.net",
        "WAA_SECRET_NAMES": json.dumps(names),
        "WAA_CLIENT_CMD": f"{sys.executable} {tmp_path / 'client.py'}",
        "WAA_VM_BOOT": "0",  # a worker outside a WAA container: no VM to boot
        "EXPECTED_DIGEST": hashlib.sha256(canary.encode()).hexdigest(),
        **workload,
    }
    return subprocess.run(
        [sys.executable, "-u", str(WORKER), "--worker-id", "w1", "--task-ids", "task-1",
         "--test-all-meta", str(tmp_path / "meta.json"), "--result-dir", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _events(stdout: str) -> list[dict]:
    prefix = "WAA_EVENT "
    return [
        json.loads(line[len(prefix) :]) for line in stdout.splitlines() if line.startswith(prefix)
    ]


def test_worker_reads_its_secret_with_the_node_identity(azure, setup, tmp_path):
    vault, identity = setup
    canary = f"canary-{uuid.uuid4().hex}"
    SecretClient(vault.properties.vault_uri, azure.credential()).set_secret(
        "openai-api-key", canary
    )
    _grant(azure, vault.id, identity["principalId"], SECRETS_USER)

    done = _run_worker(azure, tmp_path, identity, canary, {"OPENAI_API_KEY": "openai-api-key"})

    assert done.returncode == 0, done.stderr
    results = [e for e in _events(done.stdout) if e["event"] == "task_result"]
    assert [(r["task_id"], r["status"]) for r in results] == [("task-1", "success")]
    assert "client saw the key: True" in done.stderr
    assert canary not in done.stdout + done.stderr


def test_a_denied_read_is_a_permanent_failure_naming_the_role(azure, setup, tmp_path):
    vault, identity = setup
    canary = f"canary-{uuid.uuid4().hex}"
    SecretClient(vault.properties.vault_uri, azure.credential()).set_secret(
        "openai-api-key", canary
    )

    done = _run_worker(azure, tmp_path, identity, canary, {"OPENAI_API_KEY": "openai-api-key"})

    assert done.returncode == 3
    (failed,) = _events(done.stdout)
    assert (failed["event"], failed["code"]) == ("failed", "AuthorizationFailed")
    assert "'openai-api-key'" in failed["message"]
    assert "Key Vault Secrets User" in failed["message"]
    assert canary not in done.stdout + done.stderr


def test_a_missing_secret_is_a_permanent_failure_naming_it(azure, setup, tmp_path):
    vault, identity = setup
    _grant(azure, vault.id, identity["principalId"], SECRETS_USER)

    done = _run_worker(azure, tmp_path, identity, "unused", {"OPENAI_API_KEY": "not-stored"})

    assert done.returncode == 3
    (failed,) = _events(done.stdout)
    assert (failed["event"], failed["code"]) == ("failed", "InvalidConfiguration")
    assert "'not-stored'" in failed["message"]
