"""Azure Storage: the management API (``Microsoft.Storage/storageAccounts``: accounts, keys, name
availability, the blob service's settings) and the Blob data plane served at
``<account>.blob.core.windows.net`` (containers and block blobs, Shared Key and Entra
authorization). Blob bytes live on disk under the state directory, their metadata in the store.
"""

from __future__ import annotations

NAMESPACE = "Microsoft.Storage"
ACCOUNT_TYPE = f"{NAMESPACE}/storageAccounts"
BLOB_SUFFIX = ".blob.core.windows.net"
FILE_SUFFIX = ".file.core.windows.net"
# The audience Entra tokens for the data plane are issued for.
STORAGE_AUDIENCE = "https://storage.azure.com"
