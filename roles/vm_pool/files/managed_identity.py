# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An Entra access token of this VM's managed identity, for the pool's helper scripts (stdlib
only: they run with the VM's own python3).

Where the platform sets ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` (App Service's protocol, as
the emulator's VMs get it), that endpoint; else Azure's instance metadata service on the VM
itself (169.254.169.254). ``client_id`` picks one of several user-assigned identities.
"""

import json
import os
import urllib.parse
import urllib.request

IMDS_TOKEN_URL = "http://169.254.169.254/metadata/identity/oauth2/token"


def access_token(resource: str, client_id: str = "", timeout: float = 30) -> str:
    query = {"resource": resource}
    if client_id:
        query["client_id"] = client_id
    if os.environ.get("IDENTITY_ENDPOINT"):
        url = (
            os.environ["IDENTITY_ENDPOINT"]
            + "?"
            + urllib.parse.urlencode({"api-version": "2019-08-01", **query})
        )
        headers = {"X-IDENTITY-HEADER": os.environ.get("IDENTITY_HEADER", "")}
    else:
        url = IMDS_TOKEN_URL + "?" + urllib.parse.urlencode({"api-version": "2018-02-01", **query})
        headers = {"Metadata": "true"}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.load(answer)["access_token"]
