# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What controller-side actions (eval_run, aci_follow) share to act as the playbook's modules
do: the task's ``environment`` and the azcollection authentication options under the
environment names azcollection's ``AzureRMAuth`` reads (``credentials``)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from ansible_collections.openadapt.azure_eval.plugins.module_utils import credentials
from ansible_collections.openadapt.azure_eval.plugins.module_utils.credentials import (
    AUTH_ARGUMENT_SPEC,
)


def task_environment(task, templar) -> dict[str, str]:
    """The task's ``environment`` (play and block levels included), templated."""
    environment: dict[str, str] = {}
    for item in task.environment or []:
        templated = templar.template(item)
        if isinstance(templated, dict):
            environment.update({str(k): str(v) for k, v in templated.items()})
    return environment


def auth_environment(args) -> dict[str, str]:
    """The authentication arguments (azcollection's options) under the environment names
    AzureRMAuth reads; kept in memory, never put into os.environ."""
    return credentials.auth_environment({name: args.get(name) for name in AUTH_ARGUMENT_SPEC})


@contextmanager
def applied(environment):
    """``environment`` in os.environ for the duration (the SDKs read REQUESTS_CA_BUNDLE and
    the DNS redirection from there)."""
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    # The interpreter start-up hook (localazure_hook.pth, installed by make bootstrap) read the
    # environment before the task's was applied: let it see the task's (host redirection of
    # service data planes, such as a Batch account's endpoint, on the emulator).
    hook = sys.modules.get("localazure.client_hook")
    if hook is not None:
        hook.install()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
