"""The worker's secret configuration, checked before any request: what it refuses and why."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    parse_event_line,
)

_SPEC = importlib.util.spec_from_file_location(
    "waa_worker", Path(__file__).resolve().parents[2] / "worker" / "waa_worker.py"
)
worker = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(worker)


def test_no_secret_names_means_no_secrets():
    assert worker.read_secret_environment({}) == {}


@pytest.mark.parametrize(
    "names", ['["OPENAI_API_KEY"]', "{not json", '{"OPENAI_API_KEY": ""}', '{"": "x"}']
)
def test_malformed_secret_names_are_a_configuration_error(names):
    with pytest.raises(worker.SecretError) as err:
        worker.read_secret_environment(
            {"WAA_SECRET_NAMES": names, "WAA_SECRETS_VAULT_URL": "https://v.vault.azure.net"}
        )
    assert err.value.code == "InvalidConfiguration"
    assert "WAA_SECRET_NAMES" in err.value.message


def test_names_without_a_vault_or_with_a_plain_http_vault_are_refused():
    names = '{"OPENAI_API_KEY": "openai"}'
    with pytest.raises(worker.SecretError, match="WAA_SECRETS_VAULT_URL is not"):
        worker.read_secret_environment({"WAA_SECRET_NAMES": names})
    with pytest.raises(worker.SecretError, match="https URL"):
        worker.read_secret_environment(
            {"WAA_SECRET_NAMES": names, "WAA_SECRETS_VAULT_URL": "http://v.vault.azure.net"}
        )


def test_a_challenge_outside_the_vault_domain_gets_no_token():
    ok = 'Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net"'
    assert worker._challenge_resource(ok, "v.vault.azure.net") == "https://vault.azure.net"
    scope = 'Bearer authorization="https://login.microsoftonline.com/t", scope="https://vault.azure.net/.default"'
    assert worker._challenge_resource(scope, "v.vault.azure.net") == "https://vault.azure.net"
    evil = 'Bearer authorization="https://login.microsoftonline.com/t", resource="https://evil.example"'
    with pytest.raises(worker.SecretError) as err:
        worker._challenge_resource(evil, "v.vault.azure.net")
    assert err.value.code == "AuthenticationFailed"


def test_the_identity_protocol_follows_the_container_environment():
    app_service = worker.ManagedIdentity(
        {
            "IDENTITY_ENDPOINT": "https://e/msi",
            "IDENTITY_HEADER": "h",
            "DEFAULT_IDENTITY_CLIENT_ID": "c",
        }
    )
    assert (app_service.protocol, app_service.client_id) == ("App Service", "c")
    assert app_service.headers == {"X-IDENTITY-HEADER": "h"}
    aml = worker.ManagedIdentity({"MSI_ENDPOINT": "https://e/msi", "MSI_SECRET": "s"})
    assert (aml.protocol, aml.client_param, aml.headers) == (
        "Azure ML",
        "clientid",
        {"secret": "s"},
    )
    imds = worker.ManagedIdentity({"WAA_IDENTITY_CLIENT_ID": "x"})
    assert (imds.protocol, imds.client_id) == ("IMDS", "x")
    assert imds.endpoint == "http://169.254.169.254/metadata/identity/oauth2/token"


def test_the_failed_event_is_parsed_only_with_code_and_message():
    good = 'WAA_EVENT {"event":"failed","ts":1,"worker":"w","code":"AuthorizationFailed","message":"m"}'
    event = parse_event_line(good)
    assert (event.event, event.get("code")) == ("failed", "AuthorizationFailed")
    assert parse_event_line('WAA_EVENT {"event":"failed","ts":1,"worker":"w"}') is None
