#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aml_job
short_description: Submit or cancel one Azure ML command job
version_added: "0.1.0"
description:
  - Submits a command job to an Azure ML compute cluster, idempotent by job name (a job that
    exists is not submitted again), or cancels it. M(openadapt.azure_eval.aml_job_info) reads one.
  - With I(wait=true) it waits for the job to end and fails when the job failed, with the error
    run history reports.
  - Usable on its own; the evaluation itself runs many such jobs through the C(eval_run) action.
options:
  name:
    description: Job name, unique in the workspace (letters, digits, dashes, underscores).
    type: str
    required: true
  command:
    description: The command, run with bash in the container. Required to submit.
    type: str
  environment:
    description: Environment reference (C(azureml:<name>:<version>)). Required to submit.
    type: str
  compute:
    description: Compute cluster name. Required to submit.
    type: str
  environment_variables:
    description: Environment variables of the job (visible in the job's definition).
    type: dict
    default: {}
  secret_environment_variables:
    description: Environment variables kept out of Ansible's output (API keys for the agent).
    type: dict
    default: {}
  experiment_name:
    description: Experiment the job is filed under.
    type: str
    default: waa-evaluation
  display_name:
    description: Name shown in the studio.
    type: str
  timeout:
    description: Seconds after which Azure ML stops the job (C(limits.timeout)).
    type: int
    default: 14400
  state:
    description:
      - V(present) submits the job unless it exists; V(canceled) cancels it if it is still running.
    type: str
    choices: [present, canceled]
    default: present
  wait:
    description: Wait until the job ends.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait with I(wait=true).
    type: int
    default: 3600
extends_documentation_fragment:
  - azure.azcollection.azure
  - openadapt.azure_eval.aml_workspace
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
notes:
  - Supports C(--check) and C(--diff) (the job that would be submitted or canceled).
seealso:
  - module: openadapt.azure_eval.aml_job_info
"""

EXAMPLES = r"""
- name: Run one WAA task as a smoke test
  openadapt.azure_eval.aml_job:
    resource_group: openadapt-agents
    workspace: openadapt-ml
    name: waa-smoke-1
    compute: waa-cluster
    environment: azureml:waa:1
    command: echo "hello from $(hostname)"
    wait: true

- name: Cancel it
  openadapt.azure_eval.aml_job:
    resource_group: openadapt-agents
    workspace: openadapt-ml
    name: waa-smoke-1
    state: canceled
"""

RETURN = r"""
job:
  description: The job's name, status, compute, environment and error (for a failed job).
  returned: when the job exists or was submitted
  type: dict
  sample:
    name: waa-smoke-1
    status: Completed
    compute: waa-cluster
    error: null
    studio_url: https://ml.azure.com/runs/waa-smoke-1
"""

import time
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from azure.ai.ml import command as command_job

    AZURE_AI_ML_ERROR = None
except ImportError:
    AZURE_AI_ML_ERROR = traceback.format_exc()

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml
from ansible_collections.openadapt.azure_eval.plugins.module_utils.aml_jobs import (
    TERMINAL,
    get_job,
    job_status,
    job_summary,
)


class AzureRMAMLJob(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            **azure_ml.WORKSPACE_ARGS,
            name=dict(type="str", required=True),
            command=dict(type="str"),
            environment=dict(type="str"),
            compute=dict(type="str"),
            environment_variables=dict(type="dict", default={}),
            secret_environment_variables=dict(type="dict", default={}, no_log=True),
            experiment_name=dict(type="str", default="waa-evaluation"),
            display_name=dict(type="str"),
            timeout=dict(type="int", default=14400),
            state=dict(type="str", default="present", choices=["present", "canceled"]),
            wait=dict(type="bool", default=False),
            wait_timeout=dict(type="int", default=3600),
        )
        self.results = dict(changed=False)
        super().__init__(
            self.module_arg_spec,
            supports_check_mode=True,
            supports_tags=False,
            required_if=[["state", "present", ["command", "environment", "compute"]]],
        )

    def exec_module(self, **kwargs):
        if AZURE_AI_ML_ERROR:
            self.fail(missing_required_lib("azure-ai-ml"), exception=AZURE_AI_ML_ERROR)
        params = self.module.params
        self.ml = azure_ml.workspace_client(self)
        job = get_job(self.ml, params["name"])
        if params["state"] == "canceled":
            if job is not None and job_status(job) not in TERMINAL:
                self.results["changed"] = True
                if self.module._diff:
                    self.results["diff"] = dict(
                        before={"status": job_status(job)}, after={"status": "Canceled"}
                    )
                if not self.check_mode:
                    self.ml.jobs.begin_cancel(params["name"]).result()
                    job = get_job(self.ml, params["name"])
        elif job is None:
            self.results["changed"] = True
            if self.module._diff:
                wanted = {k: params[k] for k in ("name", "compute", "environment", "command")}
                self.results["diff"] = dict(before={}, after=wanted)
            if self.check_mode:
                return self.results
            job = self.ml.jobs.create_or_update(self._definition(params))
        if job is not None and params["wait"] and not self.check_mode:
            job = self._wait(job, params["wait_timeout"])
        if job is not None:
            self.results["job"] = job_summary(self.ml, job)
            if params["wait"] and self.results["job"]["status"] == "Failed":
                self.fail(
                    f"job {params['name']} failed: {self.results['job']['error']}", **self.results
                )
        return self.results

    def _definition(self, params):
        job = command_job(
            name=params["name"],
            display_name=params["display_name"] or params["name"],
            experiment_name=params["experiment_name"],
            command=params["command"],
            environment=params["environment"],
            compute=params["compute"],
            environment_variables={
                **params["environment_variables"],
                **params["secret_environment_variables"],
            },
        )
        job.set_limits(timeout=params["timeout"])
        return job

    def _wait(self, job, timeout):
        deadline = time.monotonic() + timeout
        delay = 2.0
        while job_status(job) not in TERMINAL:
            if time.monotonic() > deadline:
                self.fail(
                    f"job {job.name} did not end within {timeout}s (status {job_status(job)})"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 30.0)
            job = get_job(self.ml, job.name)
        return job


def main():
    AzureRMAMLJob()


if __name__ == "__main__":
    main()
