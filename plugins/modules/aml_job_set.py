#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aml_job_set
short_description: Run a set of Azure ML command jobs that all must pass, or cancel a recorded set
version_added: "0.3.0"
description:
  - C(state=present) submits every job of I(jobs) (a job that exists is not submitted again),
    appends each to I(run_info_file) (one JSON line per job with name, experiment, environment,
    submitted time) before it waits, then waits for all. When one fails (or is canceled), every
    other job still running is canceled at once and the module fails naming the failed job and
    its error.
  - C(state=canceled) cancels every job listed in I(run_info_file) that has not ended (the
    cleanup of a failed pipeline run).
options:
  resource_group: {description: Resource group of the workspace., type: str, required: true}
  workspace: {description: Azure ML workspace., type: str, required: true}
  state: {description: present or canceled., type: str, choices: [present, canceled], default: present}
  jobs:
    description: The jobs (C(state=present)).
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: "Job name, unique in the workspace.", type: str, required: true}
      command: {description: The command., type: str, required: true}
      environment: {description: C(azureml:<name>:<version>)., type: str, required: true}
      display_name: {description: Name shown in the studio., type: str}
  compute: {description: Compute cluster name (C(state=present))., type: str}
  experiment_name: {description: Experiment of the jobs., type: str, default: image-tests}
  run_info_file: {description: The record of submitted jobs., type: path, required: true}
  timeout: {description: Seconds to wait for the set., type: int, default: 3600}
  poll_interval: {description: Seconds between status reads., type: float, default: 5}
extends_documentation_fragment:
  - azure.azcollection.azure
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
"""

EXAMPLES = r"""
- name: Test the evaluation image with command jobs, recorded for cleanup on failure
  openadapt.azure_eval.aml_job_set:
    resource_group: openadapt-agents
    workspace: openadapt-ml
    compute: waa-cluster
    experiment_name: image-tests-20260101
    run_info_file: ./release/run_information.txt
    jobs:
      - name: winarena-latest-python
        command: python -c "import sys; print(sys.version)"
        environment: azureml:waa:1
"""

RETURN = r"""
jobs:
  description: Name and final status of each job.
  returned: always
  type: list
  elements: dict
canceled:
  description: Jobs this call canceled.
  returned: always
  type: list
  elements: str
"""

import json
import time
from pathlib import Path

try:
    from azure.ai.ml import command as command_job
    from azure.core.exceptions import ResourceNotFoundError
except ImportError:
    pass

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml

TERMINAL = ("Completed", "Failed", "Canceled")


def _status(job) -> str:
    return str(getattr(job.status, "value", job.status))


class AzureRMAMLJobSet(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            **azure_ml.WORKSPACE_ARGS,
            state=dict(type="str", choices=["present", "canceled"], default="present"),
            jobs=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    command=dict(type="str", required=True),
                    environment=dict(type="str", required=True),
                    display_name=dict(type="str"),
                ),
            ),
            compute=dict(type="str"),
            experiment_name=dict(type="str", default="image-tests"),
            run_info_file=dict(type="path", required=True),
            timeout=dict(type="int", default=3600),
            poll_interval=dict(type="float", default=5),
        )
        self.results = dict(changed=False, jobs=[], canceled=[])
        super().__init__(self.module_arg_spec, supports_check_mode=True, supports_tags=False)

    def exec_module(self, **kwargs):
        params = self.module.params
        self.ml = azure_ml.workspace_client(self)
        if params["state"] == "canceled":
            self._cancel([r["name"] for r in self._recorded()])
            return self.results
        if not params["compute"]:
            self.fail("compute is required to submit jobs; nothing was submitted.")
        if self.check_mode:
            self.results["changed"] = bool(params["jobs"])
            return self.results
        for spec in params["jobs"]:
            self._submit(spec)
        self._wait([spec["name"] for spec in params["jobs"]])
        return self.results

    def _recorded(self) -> list[dict]:
        path = Path(self.module.params["run_info_file"])
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _get(self, name: str):
        try:
            return self.ml.jobs.get(name)
        except ResourceNotFoundError:
            return None

    def _submit(self, spec: dict) -> None:
        params = self.module.params
        path = Path(params["run_info_file"])
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._get(spec["name"]) is not None:
            return
        job = command_job(
            name=spec["name"],
            display_name=spec["display_name"] or spec["name"],
            experiment_name=params["experiment_name"],
            command=spec["command"],
            environment=spec["environment"],
            compute=params["compute"],
        )
        # Recorded first: a submit that is interrupted may still have reached Azure ML.
        with path.open("a") as out:
            record = {
                "name": spec["name"],
                "experiment": params["experiment_name"],
                "environment": spec["environment"],
                "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            out.write(json.dumps(record) + "\n")
        self.ml.jobs.create_or_update(job)
        self.results["changed"] = True

    def _cancel(self, names: list[str]) -> None:
        for name in names:
            job = self._get(name)
            if job is None or _status(job) in TERMINAL:
                continue
            try:
                self.ml.jobs.begin_cancel(name).result()
            except Exception as err:  # noqa: BLE001 - cancel the others all the same
                self.module.warn(f"could not cancel job {name}: {err}")
                continue
            self.results["canceled"].append(name)
            self.results["changed"] = True

    def _wait(self, names: list[str]) -> None:
        params = self.module.params
        deadline = time.monotonic() + params["timeout"]
        while True:
            statuses = {name: _status(self._get(name)) for name in names}
            self.results["jobs"] = [{"name": n, "status": s} for n, s in statuses.items()]
            failed = [n for n, s in statuses.items() if s in ("Failed", "Canceled")]
            if failed:
                self._cancel([n for n, s in statuses.items() if s not in TERMINAL])
                code, message = azure_ml.run_error(azure_ml.run_details(self.ml, failed[0]))
                self.fail(
                    f"test job {failed[0]} {statuses[failed[0]].lower()} ({code}: {message}); "
                    f"the other jobs were canceled: {', '.join(self.results['canceled']) or 'none running'}",
                    **self.results,
                )
            if all(s == "Completed" for s in statuses.values()):
                return
            if time.monotonic() > deadline:
                self._cancel(names)
                self.fail(f"the test jobs did not end within {params['timeout']} s", **self.results)
            time.sleep(params["poll_interval"])


def main():
    AzureRMAMLJobSet()


if __name__ == "__main__":
    main()
