"""Azure Batch as an emulated service (see ``service``).

- ``accounts``: ``Microsoft.Batch/batchAccounts`` (keys, identity, auto-storage, core quotas)
- ``pools``: ``.../batchAccounts/{a}/pools`` through the management API, and the pool model both
  planes share (``pool_model``)
- ``nodes``: the pool's compute nodes on the shared node pool (``localazure.nodes``): resize
  towards the target within the account's core quota, node start (image prefetch, start task),
  node faults
- ``shared_key``: Batch's Shared Key signature, verified as the service does
- ``dataplane``: ``<account>.<region>.batch.azure.com``: pools, nodes, jobs, tasks, task files
- ``jobs``: job and task records and their wire format
- ``task_runner``: tasks on nodes, ticked by the shared lifecycle loop
- ``admin``: ``/_localazure/batch/...``
"""

NAMESPACE = "Microsoft.Batch"
ACCOUNT_TYPE = f"{NAMESPACE}/batchAccounts"
POOL_TYPE = f"{ACCOUNT_TYPE}/pools"
DNS_SUFFIX = ".batch.azure.com"
# Audiences the Batch data plane accepts for Entra tokens.
BATCH_AUDIENCES = ("https://batch.core.windows.net",)
