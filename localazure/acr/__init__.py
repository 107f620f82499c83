"""Azure Container Registry: the management API (registries, credentials, ``importImage``), the
registry data plane served at ``<name>.azurecr.io`` (Docker Registry v2 and ACR's ``/acr/v1``
APIs with ACR's OAuth2 token exchange), and a catalog of public images that imports and pulls
resolve against."""

from __future__ import annotations

NAMESPACE = "Microsoft.ContainerRegistry"
REGISTRY_TYPE = f"{NAMESPACE}/registries"
LOGIN_SUFFIX = ".azurecr.io"
