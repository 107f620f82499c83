"""What every service shares: settings, the store, the token issuer, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from localazure.core.store import Store
from localazure.core.tokens import TokenIssuer
from localazure.settings import Settings


@dataclass
class Context:
    settings: Settings
    store: Store
    issuer: TokenIssuer
    clock: Callable[[], float] = field(default=time.time)
    # fn(ctx, resource_id) of every service (``Service.on_delete``), set by the application:
    # ``arm.resources.delete_tree`` calls them so that services drop their own records when a
    # resource (or the resource group holding it) is deleted.
    delete_hooks: list[Callable[[Context, str], None]] = field(default_factory=list)

    @classmethod
    def create(cls, settings: Settings) -> Context:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.db_path)
        issuer = TokenIssuer(
            settings.state_dir / "signing-key.pem",
            issuer=f"{settings.endpoint}/{settings.tenant_id}/v2.0",
            tenant_id=settings.tenant_id,
        )
        return cls(settings=settings, store=store, issuer=issuer)

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def subscription_id(self) -> str:
        return self.settings.subscription_id
