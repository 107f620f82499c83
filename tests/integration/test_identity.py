"""Tokens: what Azure AD issues and what ARM refuses."""

from __future__ import annotations

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.mgmt.resource import ResourceManagementClient
from cryptography.hazmat.primitives.asymmetric import rsa

from localazure.core.tokens import TokenIssuer


def _get_groups(emulator, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(
        f"{emulator.endpoint}/subscriptions/{emulator.subscription_id}/resourcegroups",
        params={"api-version": "2022-09-01"},
        headers=headers,
        timeout=10,
    )


def _server_issuer(emulator) -> TokenIssuer:
    settings = emulator.settings
    return TokenIssuer(
        settings.state_dir / "signing-key.pem",
        issuer=f"{settings.endpoint}/{settings.tenant_id}/v2.0",
        tenant_id=settings.tenant_id,
    )


def test_openid_discovery_and_keys_verify_issued_tokens(azure):
    tenant = azure.settings.tenant_id
    config = requests.get(
        f"{azure.endpoint}/{tenant}/v2.0/.well-known/openid-configuration", timeout=10
    ).json()
    assert config["token_endpoint"] == f"{azure.endpoint}/{tenant}/oauth2/v2.0/token"
    keys = requests.get(config["jwks_uri"], timeout=10).json()["keys"]
    token = azure.credential().get_token("https://management.azure.com/.default").token
    header = jwt.get_unverified_header(token)
    key = next(k for k in keys if k["kid"] == header["kid"])
    claims = jwt.decode(
        token,
        jwt.algorithms.RSAAlgorithm.from_jwk(key),
        algorithms=["RS256"],
        audience="https://management.azure.com",
        issuer=config["issuer"],
    )
    assert claims["tid"] == tenant
    assert claims["appid"] == azure.env["AZURE_CLIENT_ID"]


def test_wrong_client_secret_is_refused_as_azure_ad_does(azure):
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        azure.credential(secret="not-the-secret").get_token("https://management.azure.com/.default")


def test_unknown_client_is_refused(azure):
    from azure.identity import ClientSecretCredential

    credential = ClientSecretCredential(
        azure.settings.tenant_id,
        "00000000-0000-0000-0000-000000000000",
        "x",
        authority=azure.endpoint,
        disable_instance_discovery=True,
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS700016"):
        credential.get_token("https://management.azure.com/.default")


def test_request_without_token_is_refused(azure):
    response = _get_groups(azure, None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_forged_token_is_refused(azure):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    genuine = azure.credential().get_token("https://management.azure.com/.default").token
    claims = jwt.decode(genuine, options={"verify_signature": False})
    forged = jwt.encode(
        claims, other_key, algorithm="RS256", headers=jwt.get_unverified_header(genuine)
    )
    response = _get_groups(azure, forged)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_expired_token_is_refused(azure):
    expired, _ = _server_issuer(azure).issue(
        audience="https://management.azure.com",
        object_id="0c1e5b3a-0000-4000-8000-00000000aa04",
        app_id=azure.env["AZURE_CLIENT_ID"],
        kind="ServicePrincipal",
        lifetime=-120,
    )
    response = _get_groups(azure, expired)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "ExpiredAuthenticationToken"


def test_token_for_another_audience_is_refused(azure):
    token = azure.credential().get_token("https://vault.azure.net/.default").token
    response = _get_groups(azure, token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_valid_token_is_accepted_by_the_sdk(azure):
    client = azure.mgmt_client(ResourceManagementClient)
    assert list(client.resource_groups.list()) == []
