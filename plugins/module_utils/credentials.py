# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Azure credentials for controller-side code (the eval_run action and its tiers) from
azure.azcollection's ``AzureRMAuth``, the code every azcollection module authenticates with, so
that a playbook's modules and its evaluation run as the same principal against the same cloud:
service principal (secret or certificate), Azure CLI, managed identity, a profile of
``~/.azure/credentials``, user and password; ``auth_source`` and its precedence as in the
modules (arguments, then ``AZURE_*`` variables, then the default profile, then the CLI login).

The options arrive as an environment (``AZURE_*`` names, ``ANSIBLE_AZURE_AUTH_SOURCE``): the
eval_run action puts its authentication arguments there, in memory, over the task's environment.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

# The authentication options of azcollection's modules (doc fragment azure.azcollection.azure),
# as eval_run takes them; unset options fall back to the environment, as in the modules.
AUTH_ARGUMENT_SPEC = dict(
    auth_source=dict(type="str", choices=["auto", "cli", "env", "credential_file", "msi"]),
    profile=dict(type="str"),
    subscription_id=dict(type="str"),
    client_id=dict(type="str"),
    secret=dict(type="str", no_log=True),
    tenant=dict(type="str"),
    ad_user=dict(type="str"),
    password=dict(type="str", no_log=True),
    cloud_environment=dict(type="str"),
    cert_validation_mode=dict(type="str", choices=["validate", "ignore"]),
    api_profile=dict(type="str"),
    adfs_authority_url=dict(type="str"),
    log_mode=dict(type="str"),
    log_path=dict(type="str"),
    x509_certificate_path=dict(type="path"),
    thumbprint=dict(type="str"),
    disable_instance_discovery=dict(type="bool"),
)
AUTH_SOURCE_ENV = "ANSIBLE_AZURE_AUTH_SOURCE"
_TRUE = ("1", "true", "yes", "on")


class MissingCredentials(ValueError):
    pass


def _env_names() -> dict[str, str]:
    from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
        AZURE_CREDENTIAL_ENV_MAPPING,
    )

    return {**AZURE_CREDENTIAL_ENV_MAPPING, "auth_source": AUTH_SOURCE_ENV}


def auth_environment(options: Mapping[str, object]) -> dict[str, str]:
    """The authentication options that are set, under the environment names AzureRMAuth reads."""
    names = _env_names()
    return {names[k]: str(v) for k, v in options.items() if k in names and v not in (None, "")}


def _options(env: Mapping[str, str]) -> dict[str, object]:
    options: dict[str, object] = {
        option: env[name] for option, name in _env_names().items() if env.get(name)
    }
    if "disable_instance_discovery" in options:
        options["disable_instance_discovery"] = (
            str(options["disable_instance_discovery"]).lower() in _TRUE
        )
    options.setdefault("auth_source", "auto")
    return options


def azure_auth(env: Mapping[str, str]):
    """An ``AzureRMAuth`` for the options in ``env``; MissingCredentials says why there is none."""
    return _azure_auth(tuple(sorted(_options(env).items())))


@functools.lru_cache(maxsize=8)
def _azure_auth(options: tuple[tuple[str, object], ...]):
    # One per set of options in a process: AzureRMAuth reads the cloud's metadata when it starts.
    from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
        AzureRMAuth,
        AzureRMAuthException,
    )

    try:
        return AzureRMAuth(**dict(options))
    except AzureRMAuthException as err:
        raise MissingCredentials(f"Azure authentication failed: {err}") from None


def credential_from_env(env: Mapping[str, str]):
    """The azure-identity credential the azcollection modules would use with these options."""
    return azure_auth(env).azure_credential_track2


def subscription_from_env(env: Mapping[str, str]) -> str:
    return azure_auth(env).subscription_id
