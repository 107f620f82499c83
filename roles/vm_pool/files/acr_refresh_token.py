# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A registry refresh token for this VM's managed identity (what `az acr login --identity
--expose-token` gives), printed for `docker login --password-stdin`: an Entra token of the
identity for the registry (``managed_identity``), exchanged at the registry's /oauth2/exchange.
Stdlib only. Environment: VM_POOL_LOGIN_SERVER, VM_POOL_IDENTITY_CLIENT_ID (optional)."""

import json
import os
import urllib.parse
import urllib.request

from managed_identity import access_token

server = os.environ["VM_POOL_LOGIN_SERVER"]
token = access_token(
    "https://containerregistry.azure.net", os.environ.get("VM_POOL_IDENTITY_CLIENT_ID", "")
)
form = urllib.parse.urlencode(
    {"grant_type": "access_token", "service": server, "access_token": token}
).encode()
with urllib.request.urlopen(f"https://{server}/oauth2/exchange", form, timeout=30) as answer:
    print(json.load(answer)["refresh_token"])
