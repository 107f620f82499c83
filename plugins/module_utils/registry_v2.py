# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a manifest digest from any registry speaking the Docker Registry HTTP API v2
(Docker Hub, MCR, ACR), anonymously or with basic credentials, following the bearer challenge."""

from __future__ import annotations

import re
import traceback

try:
    import requests

    REQUESTS_IMPORT_ERROR = None
except ImportError:
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.openadapt.azure_eval.plugins.module_utils.image_ref import ImageRef

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class ImageNotFound(LookupError):
    pass


class RegistryUnreachable(RuntimeError):
    pass


def _bearer_token(session, challenge: str, auth, timeout: float) -> str:
    params = dict(_CHALLENGE_PARAM.findall(challenge))
    realm = params.pop("realm", None)
    if not realm:
        raise RegistryUnreachable(f"registry sent a bearer challenge without a realm: {challenge}")
    response = session.get(realm, params=params, auth=auth, timeout=timeout)
    response.raise_for_status()
    body = response.json()
    return body.get("token") or body.get("access_token")


def manifest_digest(
    ref: ImageRef, username: str | None = None, password: str | None = None, timeout: float = 30
) -> str:
    """Return the image's ``Docker-Content-Digest``; raise ImageNotFound or RegistryUnreachable."""
    url = f"https://{ref.api_host}/v2/{ref.repository}/manifests/{ref.reference}"
    auth = (username, password) if username and password else None
    headers = {"Accept": MANIFEST_TYPES}
    try:
        with requests.Session() as session:
            response = session.head(url, headers=headers, timeout=timeout)
            if response.status_code == 401:
                challenge = response.headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("bearer"):
                    token = _bearer_token(session, challenge, auth, timeout)
                    headers["Authorization"] = f"Bearer {token}"
                    response = session.head(url, headers=headers, timeout=timeout)
                elif auth:
                    response = session.head(url, headers=headers, auth=auth, timeout=timeout)
    except requests.RequestException as err:
        raise RegistryUnreachable(f"{ref.api_host}: {err.__class__.__name__}: {err}") from None
    if response.status_code == 404:
        raise ImageNotFound(f"{ref} does not exist in {ref.registry}")
    if response.status_code in (401, 403):
        raise ImageNotFound(
            f"{ref}: {ref.registry} refused access ({response.status_code}); the image is private "
            "or does not exist: check the name, or give source credentials"
        )
    if response.status_code >= 400:
        raise RegistryUnreachable(f"{ref.registry} answered {response.status_code} for {ref}")
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        raise RegistryUnreachable(f"{ref.registry} sent no Docker-Content-Digest for {ref}")
    return digest
