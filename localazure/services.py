"""The emulated resource providers beyond ARM core and identity, in registration order.

Each module has ``register(app, ctx)`` (routes on ``app.router`` or ``app.host_router(...)``)
and may have ``bootstrap(ctx)`` (state that must exist after a start or reset).
"""

from __future__ import annotations

from localazure.acr import service as acr
from localazure.authorization import service as authorization
from localazure.ml import service as ml
from localazure.msi import service as msi
from localazure.publicregistry import service as publicregistry
from localazure.storage import service as storage

SERVICES: list = [
    authorization,
    msi,
    publicregistry,
    acr,
    storage,
    ml,
]
