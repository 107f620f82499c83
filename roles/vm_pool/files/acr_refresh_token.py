# A registry refresh token for this VM's managed identity (what `az acr login --identity
# --expose-token` gives), printed for `docker login --password-stdin`: an Entra token of the
# identity for the registry (App Service protocol where the platform sets IDENTITY_ENDPOINT, as
# the emulator does; else Azure's instance metadata service on the VM itself), exchanged at the
# registry's /oauth2/exchange. Stdlib only.
import json
import os
import urllib.parse
import urllib.request

server = os.environ["VM_POOL_LOGIN_SERVER"]
client_id = os.environ.get("VM_POOL_IDENTITY_CLIENT_ID", "")
resource = "https://containerregistry.azure.net"
query = {"resource": resource}
if client_id:
    query["client_id"] = client_id
if os.environ.get("IDENTITY_ENDPOINT"):
    url = (
        os.environ["IDENTITY_ENDPOINT"]
        + "?"
        + urllib.parse.urlencode({"api-version": "2019-08-01", **query})
    )
    headers = {"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]}
else:
    url = "http://169.254.169.254/metadata/identity/oauth2/token?" + urllib.parse.urlencode(
        {"api-version": "2018-02-01", **query}
    )
    headers = {"Metadata": "true"}
with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
    token = json.load(answer)["access_token"]
form = urllib.parse.urlencode(
    {"grant_type": "access_token", "service": server, "access_token": token}
).encode()
with urllib.request.urlopen(f"https://{server}/oauth2/exchange", form, timeout=30) as answer:
    print(json.load(answer)["refresh_token"])
