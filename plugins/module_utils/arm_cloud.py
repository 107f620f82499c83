# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Resource Manager endpoint of the cloud azcollection's ``cloud_environment`` names: one of
Azure's public clouds by name, or a metadata discovery URL (Azure Stack, localazure), read as
azcollection reads it."""

from __future__ import annotations

PUBLIC_CLOUDS = {
    "azurecloud": "https://management.azure.com/",
    "azurechinacloud": "https://management.chinacloudapi.cn/",
    "azureusgovernment": "https://management.usgovcloudapi.net/",
}


def resource_manager(cloud_environment: str | None) -> str:
    if not cloud_environment:
        return PUBLIC_CLOUDS["azurecloud"]
    if not cloud_environment.startswith("https://"):
        try:
            return PUBLIC_CLOUDS[cloud_environment.lower()]
        except KeyError:
            raise ValueError(f"unknown cloud_environment '{cloud_environment}'") from None
    import requests

    url = cloud_environment.rstrip("/") + "/metadata/endpoints?api-version=2015-01-01"
    response = requests.get(url, timeout=30)
    response.raise_for_status()
    return response.json()["resourceManager"]
