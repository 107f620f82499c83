"""Import paths for the whole test suite.

``collections/`` holds ``ansible_collections/openadapt/azure_eval`` (a link back to the repository
root), so module_utils import by their FQCN, exactly as Ansible loads them. The repository root
makes ``localazure`` importable without installing it.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

for path in (REPO_ROOT / "collections", REPO_ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
