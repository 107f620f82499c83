#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: azure_caller_info
short_description: Who the playbook authenticates as (object id, tenant), without Microsoft Graph
version_added: "0.2.0"
description:
  - Reads the claims of the Azure Resource Manager access token the module's credentials obtain
    and returns the principal's object id (C(oid)), tenant and application id, so that a role
    can grant the principal running the playbook a data role (for example Storage Blob Data
    Contributor to upload with Entra instead of an account key).
  - M(azure.azcollection.azure_rm_account_info) answers the same question through Microsoft
    Graph, which service principals often may not read; the token needs no extra permission.
  - The token itself is never returned or logged.
extends_documentation_fragment:
  - azure.azcollection.azure
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
notes:
  - Read-only; supports C(--check).
"""

EXAMPLES = r"""
- name: Find the principal running the playbook
  openadapt.azure_eval.azure_caller_info:
  register: caller
"""

RETURN = r"""
object_id:
  description: Object id of the principal (user, service principal or managed identity).
  returned: always
  type: str
tenant_id:
  description: Tenant of the token.
  returned: always
  type: str
app_id:
  description: Application (client) id, when the caller is an application.
  returned: always
  type: str
principal_type:
  description: C(User) or C(ServicePrincipal) (the principal type role assignments take).
  returned: always
  type: str
"""

import base64
import json

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)


def token_claims(token: str) -> dict:
    """The payload of a JWT, unverified: the module only reads who it is, the service verifies."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as err:
        raise ValueError("the access token is not a JWT") from err


class AzureRMCallerInfo(AzureRMModuleBase):
    def __init__(self):
        self.results = dict(changed=False)
        super().__init__(dict(), supports_check_mode=True, supports_tags=False)

    def exec_module(self, **kwargs):
        endpoint = self._cloud_environment.endpoints.active_directory_resource_id
        scope = endpoint.rstrip("/") + "/.default"
        token = self.azure_auth.azure_credential_track2.get_token(scope).token
        try:
            claims = token_claims(token)
        except ValueError as err:
            self.fail(str(err))
        if not claims.get("oid"):
            self.fail("the access token carries no object id (oid claim)")
        app_id = claims.get("appid") or claims.get("azp") or ""
        self.results.update(
            object_id=claims["oid"],
            tenant_id=claims.get("tid", ""),
            app_id=app_id,
            principal_type="User" if claims.get("scp") or claims.get("upn") else "ServicePrincipal",
        )
        return self.results


def main():
    AzureRMCallerInfo()


if __name__ == "__main__":
    main()
