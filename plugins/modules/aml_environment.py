#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aml_environment
short_description: Register an Azure ML environment version that runs a container image
version_added: "0.1.0"
description:
  - Registers C(name:version) in an Azure ML workspace pointing at a container image, typically
    the evaluation image imported into the workspace's registry (C(<acr>.azurecr.io/winarena:latest)).
  - Environment versions are immutable in Azure ML. An existing version with the same image is
    left alone; one with another image is refused with the fix (bump I(version)).
options:
  name:
    description: Environment name.
    type: str
    required: true
  version:
    description: Environment version.
    type: str
    required: true
  image:
    description: Container image reference (registry/repository:tag or @digest).
    type: str
    required: true
  description:
    description: Description shown in the studio.
    type: str
  tags:
    description: Tags of the version.
    type: dict
extends_documentation_fragment:
  - azure.azcollection.azure
  - openadapt.azure_eval.aml_workspace
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
notes:
  - Supports C(--check) and C(--diff).
"""

EXAMPLES = r"""
- name: The WAA image from the workspace's registry
  openadapt.azure_eval.aml_environment:
    resource_group: openadapt-agents
    workspace: openadapt-ml
    name: waa
    version: "1"
    image: openadaptevals.azurecr.io/winarena:latest
"""

RETURN = r"""
id:
  description: The reference jobs use, C(azureml:<name>:<version>).
  returned: always
  type: str
  sample: azureml:waa:1
image:
  description: The image of the version.
  returned: always
  type: str
"""

import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from azure.ai.ml.entities import Environment
    from azure.core.exceptions import ResourceNotFoundError
except ImportError:
    # reported in exec_module with missing_required_lib
    AZURE_SDK_IMPORT_ERROR = traceback.format_exc()
else:
    AZURE_SDK_IMPORT_ERROR = None

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml, image_ref


class AzureRMAMLEnvironment(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            **azure_ml.WORKSPACE_ARGS,
            name=dict(type="str", required=True),
            version=dict(type="str", required=True),
            image=dict(type="str", required=True),
            description=dict(type="str"),
            tags=dict(type="dict"),
        )
        self.results = dict(changed=False)
        super().__init__(self.module_arg_spec, supports_check_mode=True, supports_tags=False)

    def exec_module(self, **kwargs):
        if AZURE_SDK_IMPORT_ERROR:
            self.fail(missing_required_lib("azure-ai-ml"), exception=AZURE_SDK_IMPORT_ERROR)
        params = self.module.params
        try:
            image_ref.parse(params["image"])
        except image_ref.InvalidImageReference as err:
            self.fail(f"image: {err}")
        ml = azure_ml.workspace_client(self)
        self.results.update(
            id=f"azureml:{params['name']}:{params['version']}", image=params["image"]
        )
        try:
            existing = ml.environments.get(params["name"], version=params["version"])
        except ResourceNotFoundError:
            existing = None
        if existing is not None:
            if existing.image != params["image"]:
                self.fail(
                    f"environment {params['name']}:{params['version']} exists with image {existing.image}; "
                    f"versions are immutable, so {params['image']} needs a new version (bump version)."
                )
            return self.results
        self.results["changed"] = True
        if self.module._diff:
            self.results["diff"] = dict(before={}, after={"image": params["image"]})
        if not self.check_mode:
            ml.environments.create_or_update(
                Environment(
                    name=params["name"],
                    version=params["version"],
                    image=params["image"],
                    description=params["description"],
                    tags=params["tags"] or {},
                )
            )
        return self.results


def main():
    AzureRMAMLEnvironment()


if __name__ == "__main__":
    main()
