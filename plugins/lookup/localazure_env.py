# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: localazure_env
short_description: The client environment of the running localazure emulator
version_added: "0.1.0"
description:
  - The variables C(localazure env) prints for the emulator of C(LOCALAZURE_STATE_DIR) and
    C(LOCALAZURE_PORT) (defaults C(.state/localazure) of this checkout and 44300, those of
    C(inventories/local)); its endpoint as C(AZURE_CLOUD_ENVIRONMENT), the development
    principal's credentials, the CA bundle.
  - With I(export=true) the whole environment is also put into the calling process's own
    environment. That is for the C(azure.azcollection.azure_rm) inventory plugin of
    C(inventories/local), which reads the cloud, the credentials (C(auth_source=env)) and the CA
    bundle from there, so that C(ansible-inventory -i inventories/local) needs nothing exported.
  - Fails when the emulator is not running (its secret file is missing or it does not answer).
options:
  _terms:
    description: Names of the variables to return.
    required: true
  export:
    description: Also set every variable in this process's environment.
    type: bool
    default: false
"""

EXAMPLES = r"""
# inventories/local/waa_workers.azure_rm.yml
plugin: azure.azcollection.azure_rm
auth_source: env
subscription_id: "{{ lookup('openadapt.azure_eval.localazure_env', 'AZURE_SUBSCRIPTION_ID', export=true) }}"
"""

RETURN = r"""
_raw:
  description: The values, in the order of the names.
  type: list
  elements: str
"""

import os
from pathlib import Path

from ansible.errors import AnsibleError
from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url
from ansible.plugins.lookup import LookupBase

CHECKOUT = Path(__file__).resolve().parents[2]


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        from localazure.cli import environment
        from localazure.settings import DEFAULT_PORT, Settings

        state_dir = Path(
            os.environ.get("LOCALAZURE_STATE_DIR") or CHECKOUT / ".state" / "localazure"
        )
        port = int(os.environ.get("LOCALAZURE_PORT") or DEFAULT_PORT)
        settings = Settings(port=port, state_dir=state_dir)
        if not settings.secret_file.exists() or not _answers(settings):
            raise AnsibleError(
                f"localazure is not running at {settings.endpoint} (state {state_dir}): start it "
                "with `python -m localazure start` (site.yml does) to list its VMs"
            )
        env = environment(settings)
        if self.get_option("export"):
            os.environ.update(env)
        missing = [t for t in terms if t not in env]
        if missing:
            raise AnsibleError(f"localazure env has no {', '.join(missing)}")
        return [env[t] for t in terms]


def _answers(settings) -> bool:
    try:
        with open_url(
            f"{settings.endpoint}/_localazure/health", timeout=5, ca_path=str(settings.ca_bundle)
        ):
            return True
    except (OSError, UrlConnectionError):
        return False
