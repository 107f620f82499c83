# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Azure credentials for controller-side code (the eval_run action), from the same environment
variables azure.azcollection reads, so that a playbook's modules and its evaluation run as the
same principal against the same cloud."""

from __future__ import annotations

from collections.abc import Mapping

PUBLIC_AUTHORITIES = (
    "login.microsoftonline.com",
    "login.chinacloudapi.cn",
    "login.microsoftonline.us",
)


class MissingCredentials(ValueError):
    pass


def credential_from_env(env: Mapping[str, str]):
    """A ClientSecretCredential for AZURE_CLIENT_ID/AZURE_SECRET/AZURE_TENANT (azcollection names,
    or azure-identity's AZURE_CLIENT_SECRET/AZURE_TENANT_ID), else the Azure CLI login."""
    from azure.identity import AzureCliCredential, ClientSecretCredential

    client_id = env.get("AZURE_CLIENT_ID")
    secret = env.get("AZURE_SECRET") or env.get("AZURE_CLIENT_SECRET")
    tenant = env.get("AZURE_TENANT") or env.get("AZURE_TENANT_ID")
    if client_id and secret and tenant:
        authority = env.get("AZURE_AUTHORITY_HOST") or env.get("AZURE_CLOUD_ENVIRONMENT")
        kwargs = {}
        if authority and authority.startswith("https://"):
            kwargs["authority"] = authority
            kwargs["disable_instance_discovery"] = not any(
                a in authority for a in PUBLIC_AUTHORITIES
            )
        return ClientSecretCredential(tenant, client_id, secret, **kwargs)
    if env.get("AZURE_AUTH_SOURCE", "auto") in ("auto", "cli"):
        return AzureCliCredential()
    raise MissingCredentials(
        "no Azure credentials: export AZURE_CLIENT_ID, AZURE_SECRET and AZURE_TENANT, or log in "
        "with `az login` and set AZURE_AUTH_SOURCE=cli"
    )


def subscription_from_env(env: Mapping[str, str]) -> str:
    subscription = env.get("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        raise MissingCredentials("AZURE_SUBSCRIPTION_ID is not set")
    return subscription
