"""The emulated resource providers beyond ARM core and identity, in registration order.

Each module has ``register(app, ctx)`` (routes on ``app.router`` or ``app.host_router(...)``)
and may have ``bootstrap(ctx)`` (state that must exist after a start or reset).
"""

from __future__ import annotations

SERVICES: list = []
