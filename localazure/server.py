"""Run the emulator with uvicorn over HTTPS."""

from __future__ import annotations

import logging

import uvicorn

from localazure.app import create_app
from localazure.arm.resources import regional_wildcards
from localazure.core.context import Context
from localazure.core.tls import ensure_certificates
from localazure.settings import REGIONAL_SUFFIXES, Settings


def serve(settings: Settings) -> None:
    cert, key = ensure_certificates(
        settings.tls_dir, settings.host, regional_wildcards(REGIONAL_SUFFIXES)
    )
    ctx = Context.create(settings)
    app = create_app(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        # Idle keep-alive connections of SDK sessions must not hold a stop or restart.
        timeout_graceful_shutdown=1,
    )
