#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation of the eval_run action plugin (plugins/action/eval_run.py), which runs on the
# controller; as for every action plugin, this module file only carries the documentation.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: eval_run
short_description: Run a Windows Agent Arena evaluation on a tier, resumably
version_added: "0.1.0"
description:
  - Runs the tasks of a WAA task set on O(workers) concurrent jobs of a tier, from the
    controller. The evaluation engine schedules tasks onto jobs, submits them, checks that each
    worker started (O(startup_timeout)), detects stuck workers (O(stuck_after)), classifies
    failures, retries transient ones with backoff up to O(max_attempts), stops feeding a tier
    that keeps failing, cancels what it started when it stops, and accounts cost from measured
    node time.
  - Every task's final result is recorded once in a ledger under O(state_dir)/O(run_name); a
    re-run with the same O(run_name) resumes and never repeats a finished task.
  - The results go to the C(openadapt.azure_eval.eval_report) callback, which writes the report.
  - Only O(tier=aml) exists today (an Azure ML compute cluster, see O(tier_options)).
options:
  tier:
    description: Tier to run on.
    type: str
    required: true
    choices: [aml]
  run_name:
    description: Name of the run; the same name resumes the same run from its ledger.
    type: str
    required: true
  task_set:
    description: "WAA task list on the controller (C(test_all.json) shape, C({domain: [task ids]}))."
    type: path
    required: true
  task_ids:
    description: Only these tasks.
    type: list
    elements: str
    default: []
  domains:
    description: Only the tasks of these domains.
    type: list
    elements: str
    default: []
  max_tasks:
    description: At most this many tasks (the first ones of the selection).
    type: int
  workers:
    description: Concurrent workers (jobs).
    type: int
    default: 10
  scheduling:
    description:
      - V(dynamic) hands out shrinking chunks as workers finish; V(static) splits the tasks into
        O(workers) fixed shards, as WAA does.
    type: str
    choices: [dynamic, static]
    default: dynamic
  startup_timeout:
    description: Seconds a job may run without its worker's first event before it is cancelled.
    type: float
    default: 600
  stuck_after:
    description: Seconds without any worker event before a running job counts as stuck.
    type: float
    default: 600
  max_attempts:
    description: Attempts per task.
    type: int
    default: 3
  poll_interval:
    description: Seconds between polls of each job.
    type: float
    default: 10
  heartbeat_interval:
    description: Seconds between the workers' heartbeats.
    type: float
    default: 30
  job_timeout:
    description: Hard limit of one job, in seconds.
    type: int
    default: 14400
  state_dir:
    description: Directory of the run's ledger, live status file and result.
    type: path
    required: true
  environment_variables:
    description: Environment of every worker.
    type: dict
    default: {}
  secret_environment_variables:
    description: Secret environment of every worker (agent API keys); never printed or stored in the ledger.
    type: dict
    default: {}
  tier_options:
    description:
      - The tier's own options. For O(tier=aml) - C(resource_group), C(workspace), C(compute)
        (the cluster), C(environment) (C(azureml:<name>:<version>)) and optionally
        C(experiment_name), C(golden_image) and C(task_feed) (a blob container's URL through
        which running jobs get their next tasks, one job per node; the controller's principal
        needs Storage Blob Data Contributor on it, the cluster's identity Storage Blob Data Reader).
    type: dict
    default: {}
  check_only:
    description: Only check the inputs and count the tasks; run nothing.
    type: bool
    default: false
  variable_names:
    description: The variable names the options were set by (role eval passes them), for error messages.
    type: dict
    default: {}
attributes:
  action:
    description: Runs on the controller as an action plugin.
    support: full
  check_mode:
    description: Reads the ledger and reports how many tasks would run; submits nothing.
    support: full
  diff_mode:
    description: No diff.
    support: none
  platform:
    description: Runs on the controller.
    support: full
    platforms: all
extends_documentation_fragment:
  - azure.azcollection.azure
notes:
  - Authenticates with azure.azcollection's C(AzureRMAuth), as its modules do (service principal,
    Azure CLI, managed identity, credential file profile, certificate); without the
    authentication options the C(AZURE_*) environment variables of the task apply.
    O(api_profile), O(log_mode) and O(log_path) are accepted and unused.
  - Ctrl-C cancels every job the run started; run the same command again to resume.
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
"""

EXAMPLES = r"""
- name: Evaluate three tasks on the cluster of role aml_cluster
  openadapt.azure_eval.eval_run:
    tier: aml
    run_name: waa-smoke
    task_set: "{{ playbook_dir }}/../localazure/workload/data/waa_synthetic_test_all.json"
    max_tasks: 3
    workers: 2
    state_dir: "{{ playbook_dir }}/../.state/runs"
    environment_variables:
      WAA_STANDIN_TIME_SCALE: "0.1"
    tier_options:
      resource_group: openadapt-agents
      workspace: openadapt-ml
      compute: waa-cluster
      environment: azureml:waa:1
      # WAA's golden image, uploaded by playbooks/waa_image.yml (role waa_image)
      golden_image: azureml://datastores/waa_golden_image/paths/storage
  register: evaluation
"""

RETURN = r"""
evaluation:
  description:
    - The run's results, per task (status, score, attempts, job), per domain, retries by code,
      makespan, jobs submitted and cost. On failure, the results recorded so far.
  returned: always
  type: dict
ledger:
  description: Path of the run's ledger.
  returned: always
  type: str
status_file:
  description: Path of the live status file (updated while the run goes on).
  returned: success
  type: str
tier_details:
  description: What the tier ran on (workspace, compute, size, price per node-hour).
  returned: success
  type: dict
"""
