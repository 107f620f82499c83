#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: acr_import
short_description: Import a container image into an Azure Container Registry
version_added: "0.1.0"
description:
  - Imports an image from a public or private registry (Docker Hub, MCR, another ACR) into an
    Azure Container Registry with the registry's C(importImage) operation, as
    C(az acr import) does. The image is copied registry to registry; nothing is pulled to the
    controller.
  - Idempotent by digest. The source manifest digest is read from the source registry's v2 API
    and compared with every target tag; when all already point at it, nothing is imported.
  - A target tag that points at another digest is overwritten only with I(force=true), mirroring
    the C(NoForce)/C(Force) modes of the import API.
  - In check mode the source is still resolved, so a missing source image fails before anything
    is created.
options:
  resource_group:
    description: Resource group of the registry.
    type: str
    required: true
  registry:
    description: Name of the registry (not its login server).
    type: str
    required: true
  source:
    description:
      - Source image reference, C([registry/]repository[:tag][@digest]).
      - Without a registry host the image comes from Docker Hub (C(docker.io)).
    type: str
    required: true
  source_username:
    description: User name for a private source registry.
    type: str
  source_password:
    description: Password or token for a private source registry.
    type: str
  target_tags:
    description:
      - Target C(repository:tag) names in the registry.
      - Defaults to the source repository and tag without the registry host and without Docker
        Hub's C(library/) prefix (C(windowsarena/winarena:latest) for
        C(docker.io/windowsarena/winarena:latest)).
    type: list
    elements: str
  force:
    description: Overwrite target tags that point at another digest.
    type: bool
    default: false
extends_documentation_fragment:
  - azure.azcollection.azure
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
notes:
  - Supports C(--check) and C(--diff) (the digest of each target tag before and after).
"""

EXAMPLES = r"""
- name: Import the Windows Agent Arena image from Docker Hub
  openadapt.azure_eval.acr_import:
    resource_group: openadapt-agents
    registry: openadaptevals
    source: docker.io/windowsarena/winarena:latest
    target_tags:
      - winarena:latest

- name: Refresh the image even if the tag exists with an older digest
  openadapt.azure_eval.acr_import:
    resource_group: openadapt-agents
    registry: openadaptevals
    source: windowsarena/winarena:latest
    force: true
"""

RETURN = r"""
digest:
  description: Manifest digest of the source image (and, after the import, of every target tag).
  returned: when the source registry could be read
  type: str
  sample: sha256:5f1e6fbd3b2d2b4fd7a0c37e2b1e45b0f6c45e52a0cbb1a40b1b1b5a2a0d6c11
login_server:
  description: Login server of the registry.
  returned: when the registry exists
  type: str
  sample: openadaptevals.azurecr.io
images:
  description: Fully qualified target images.
  returned: always
  type: list
  elements: str
  sample: [openadaptevals.azurecr.io/winarena:latest]
imported:
  description: Whether the import operation ran (or would run, in check mode).
  returned: always
  type: bool
"""

import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from azure.containerregistry import ContainerRegistryClient
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.mgmt.containerregistry.models import (
        ImportImageParameters,
        ImportSource,
        ImportSourceCredentials,
    )
except ImportError:
    # reported in exec_module with missing_required_lib
    AZURE_SDK_IMPORT_ERROR = traceback.format_exc()
else:
    AZURE_SDK_IMPORT_ERROR = None

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils import image_ref, registry_v2

ACR_AUDIENCE = "https://management.azure.com"


class AzureRMACRImport(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            resource_group=dict(type="str", required=True),
            registry=dict(type="str", required=True),
            source=dict(type="str", required=True),
            source_username=dict(type="str"),
            source_password=dict(type="str", no_log=True),
            target_tags=dict(type="list", elements="str"),
            force=dict(type="bool", default=False),
        )
        self.results = dict(changed=False, imported=False, images=[])
        super().__init__(
            self.module_arg_spec,
            supports_check_mode=True,
            supports_tags=False,
            required_together=[["source_username", "source_password"]],
        )

    def exec_module(self, **kwargs):
        if AZURE_SDK_IMPORT_ERROR:
            self.fail(
                missing_required_lib("azure-containerregistry and azure-mgmt-containerregistry"),
                exception=AZURE_SDK_IMPORT_ERROR,
            )
        if registry_v2.REQUESTS_IMPORT_ERROR:
            self.fail(missing_required_lib("requests"), exception=registry_v2.REQUESTS_IMPORT_ERROR)
        params = self.module.params
        try:
            source = image_ref.parse(params["source"])
        except image_ref.InvalidImageReference as err:
            self.fail(f"source: {err}")
        targets = params["target_tags"] or [image_ref.default_target(source)]
        for target in targets:
            self._check_target(target)

        digest = self._source_digest(source)
        registry = self._registry()
        login_server = registry.login_server.lower() if registry else None
        before = (
            self._target_digests(login_server, targets) if registry else {t: None for t in targets}
        )
        self.results.update(login_server=login_server, digest=digest)
        self.results["images"] = [
            f"{login_server or params['registry'] + '.azurecr.io'}/{t}" for t in targets
        ]

        stale = {t: d for t, d in before.items() if d is not None and d != digest}
        if digest is not None and all(d == digest for d in before.values()):
            return self.results
        if digest is None and all(d is not None for d in before.values()) and not params["force"]:
            self.module.warn(
                f"could not read the digest of {source} from its registry; the target tags exist, "
                "so nothing was imported (use force: true to re-import)"
            )
            return self.results
        if stale and not params["force"]:
            names = ", ".join(f"{t} ({d})" for t, d in stale.items())
            self.fail(
                f"target tags already exist with another digest: {names}; the source {source} is "
                f"{digest}. Set force: true to overwrite them, or choose other target_tags."
            )

        self.results.update(changed=True, imported=True)
        after = {t: digest for t in targets}
        if self.module._diff:
            self.results["diff"] = dict(before={"tags": before}, after={"tags": after})
        if self.check_mode:
            return self.results
        if registry is None:
            self.fail(
                f"registry '{params['registry']}' was not found in resource group "
                f"'{params['resource_group']}'; create it first (role openadapt.azure_eval.acr)"
            )
        self._import(source, targets)
        imported = self._target_digests(login_server, targets)
        missing = [t for t, d in imported.items() if d is None]
        if missing:
            self.fail(f"import reported success but these tags are missing: {', '.join(missing)}")
        self.results["digest"] = next(iter(imported.values()))
        return self.results

    def _check_target(self, target):
        repository, sep, tag = target.rpartition(":")
        if not sep or not repository or "/" in tag or "@" in target:
            self.fail(
                f"target_tags: '{target}' must be repository:tag (for example winarena:latest)"
            )
        try:
            image_ref.parse(f"{self.module.params['registry'].lower()}.azurecr.io/{target}")
        except image_ref.InvalidImageReference as err:
            self.fail(f"target_tags: {err}")

    def _source_digest(self, source):
        try:
            return registry_v2.manifest_digest(
                source, self.module.params["source_username"], self.module.params["source_password"]
            )
        except registry_v2.ImageNotFound as err:
            self.fail(f"source image not found: {err}. Check the repository and tag.")
        except registry_v2.RegistryUnreachable as err:
            self.module.warn(
                f"could not read {source} from its registry ({err}); importing without a digest check"
            )
            return None

    def _registry(self):
        try:
            return self.containerregistry_client.registries.get(
                self.module.params["resource_group"], self.module.params["registry"]
            )
        except ResourceNotFoundError:
            return None

    def _data_client(self, login_server):
        return ContainerRegistryClient(
            endpoint=f"https://{login_server}",
            credential=self.azure_auth.azure_credential_track2,
            audience=ACR_AUDIENCE,
        )

    def _target_digests(self, login_server, targets):
        client = self._data_client(login_server)
        digests = {}
        for target in targets:
            repository, tag = target.rsplit(":", 1)
            try:
                digests[target] = client.get_manifest_properties(repository, tag).digest
            except ResourceNotFoundError:
                digests[target] = None
        return digests

    def _import(self, source, targets):
        params = self.module.params
        credentials = None
        if params["source_username"]:
            credentials = ImportSourceCredentials(
                username=params["source_username"], password=params["source_password"]
            )
        parameters = ImportImageParameters(
            source=ImportSource(
                registry_uri=source.registry,
                source_image=source.repository_and_reference,
                credentials=credentials,
            ),
            target_tags=targets,
            mode="Force" if params["force"] else "NoForce",
        )
        try:
            self.containerregistry_client.registries.begin_import_image(
                params["resource_group"], params["registry"], parameters
            ).result()
        except HttpResponseError as err:
            code = err.error.code if err.error else err.status_code
            self.fail(f"importing {source} into {params['registry']} failed: {code}: {err.message}")


def main():
    AzureRMACRImport()


if __name__ == "__main__":
    main()
