#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aml_job_info
short_description: Read one Azure ML job
version_added: "0.1.0"
description:
  - Reads an Azure ML job's status, compute, environment and, for a failed job, the error run
    history reports. Changes nothing.
options:
  name:
    description: Job name.
    type: str
    required: true
extends_documentation_fragment:
  - azure.azcollection.azure
  - openadapt.azure_eval.aml_workspace
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
seealso:
  - module: openadapt.azure_eval.aml_job
"""

EXAMPLES = r"""
- name: Read the smoke-test job
  openadapt.azure_eval.aml_job_info:
    resource_group: openadapt-agents
    workspace: openadapt-ml
    name: waa-smoke-1
  register: smoke
"""

RETURN = r"""
exists:
  description: Whether the job exists.
  returned: always
  type: bool
job:
  description: The job's name, status, compute, environment and error (for a failed job).
  returned: when the job exists
  type: dict
  sample:
    name: waa-smoke-1
    status: Completed
    compute: waa-cluster
    error: null
    studio_url: https://ml.azure.com/runs/waa-smoke-1
"""

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml
from ansible_collections.openadapt.azure_eval.plugins.module_utils.aml_jobs import (
    get_job,
    job_summary,
)


class AzureRMAMLJobInfo(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(**azure_ml.WORKSPACE_ARGS, name=dict(type="str", required=True))
        self.results = dict(changed=False, exists=False)
        super().__init__(
            self.module_arg_spec, supports_check_mode=True, supports_tags=False, facts_module=True
        )

    def exec_module(self, **kwargs):
        ml = azure_ml.workspace_client(self)
        job = get_job(ml, self.module.params["name"])
        if job is not None:
            self.results.update(exists=True, job=job_summary(ml, job))
        return self.results


def main():
    AzureRMAMLJobInfo()


if __name__ == "__main__":
    main()
