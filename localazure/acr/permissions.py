"""Which roles let a principal use a registry's content. Azure grants each registry operation
through either of two permission sets: the registry-wide actions of the classic roles (AcrPull,
AcrPush, AcrDelete: ``registries/pull/read``, ...) or the repository data actions of the
"Container Registry Repository ..." roles (``registries/repositories/content/read``, ...)."""

from __future__ import annotations

from localazure.authorization.access import is_allowed
from localazure.core.context import Context

_NS = "Microsoft.ContainerRegistry/registries"
PULL = f"{_NS}/pull/read"
PUSH = f"{_NS}/push/write"
DELETE = f"{_NS}/artifacts/delete"

# operation -> (control-plane action, data action); either one grants it.
GRANTS = {
    "pull": (PULL, f"{_NS}/repositories/content/read"),
    "metadata_read": (PULL, f"{_NS}/repositories/metadata/read"),
    "push": (PUSH, f"{_NS}/repositories/content/write"),
    "metadata_write": (PUSH, f"{_NS}/repositories/metadata/write"),
    "delete": (DELETE, f"{_NS}/repositories/content/delete"),
    "catalog": (PULL, f"{_NS}/catalog/read"),
}


def permits(ctx: Context, object_id: str, operation: str, registry_id: str) -> bool:
    """Whether ``object_id`` may perform ``operation`` (a key of ``GRANTS``) on the registry."""
    action, data_action = GRANTS[operation]
    return is_allowed(ctx, object_id, action, registry_id) or is_allowed(
        ctx, object_id, data_action, registry_id, data=True
    )
