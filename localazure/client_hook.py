"""Interpreter start-up hook of the project's environment (loaded by ``localazure_hook.pth``).

Two jobs, both additive (nothing installed is edited):

1. Restore ``azure.cli.core.cloud.get_cloud_from_metadata_endpoint``. azure.azcollection 3.12.0
   calls it for ``cloud_environment: <metadata URL>``, but azure-cli-core 2.75 no longer has it
   (ansible-collections/azure#2157). msrestazure's function of the same name does the same
   discovery (``/metadata/endpoints?api-version=2015-01-01``); it is attached when
   ``azure.cli.core.cloud`` is first imported. This serves Azure Stack users as well.
2. When ``LOCALAZURE_DNS`` lists host suffixes (``localazure env`` sets ``.azurecr.io``,
   ``.vault.azure.net``, ``.docker.io`` and ``mcr.microsoft.com``), resolve those hosts to the
   emulator's address and port, so registry login servers and key vaults keep Azure's own names
   (``myregistry.azurecr.io``, ``myvault.vault.azure.net``) and imports read their sources from
   the public registries' own names. TLS stays verified: the emulator's certificate names them
   and is trusted only through ``REQUESTS_CA_BUNDLE``.

3. When ``AZURE_DISABLE_INSTANCE_DISCOVERY`` is ``true`` (``localazure env`` sets it), make
   azure-identity's ``ClientSecretCredential`` skip MSAL's instance discovery unless told
   otherwise. azcollection's storage modules build that credential themselves for
   ``auth_mode: login`` without the option, and the discovery asks login.microsoftonline.com
   about the emulator's authority, which it cannot answer. Real Azure is unaffected: the
   variable is only set for the emulator.

Only the standard library is imported here, so the hook costs nothing when unused.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import socket
import sys
from urllib.parse import urlsplit

_CLOUD_MODULE = "azure.cli.core.cloud"
_IDENTITY_MODULE = "azure.identity._credentials.client_secret"


def _attach_metadata_discovery(module) -> None:
    if hasattr(module, "get_cloud_from_metadata_endpoint"):
        return

    def get_cloud_from_metadata_endpoint(arm_endpoint, name=None, session=None):
        from msrestazure.azure_cloud import get_cloud_from_metadata_endpoint as discover

        return discover(arm_endpoint, name=name, session=session)

    module.get_cloud_from_metadata_endpoint = get_cloud_from_metadata_endpoint


def _default_no_instance_discovery(module) -> None:
    credential = module.ClientSecretCredential
    if getattr(credential, "_localazure", False):
        return
    original_init = credential.__init__

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("disable_instance_discovery", True)
        original_init(self, *args, **kwargs)

    credential.__init__ = __init__
    credential._localazure = True


def _patches() -> dict:
    patches = {_CLOUD_MODULE: _attach_metadata_discovery}
    if os.environ.get("AZURE_DISABLE_INSTANCE_DISCOVERY", "").lower() == "true":
        patches[_IDENTITY_MODULE] = _default_no_instance_discovery
    return patches


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        patch = _patches().get(fullname)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _install_resolver(suffixes: list[str], endpoint: str) -> None:
    target = urlsplit(endpoint)
    address, port = target.hostname, target.port or 443
    # A later install (another emulator activated in the same process) replaces the redirection.
    original = getattr(socket.getaddrinfo, "_localazure_original", socket.getaddrinfo)

    def getaddrinfo(host, service, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host or ""
        if any(name.lower().endswith(suffix) for suffix in suffixes):
            if service in (443, "443", "https", None):
                service = port
            return original(address, service, *args, **kwargs)
        return original(host, service, *args, **kwargs)

    getaddrinfo._localazure_original = original
    getaddrinfo._localazure_endpoint = endpoint
    socket.getaddrinfo = getaddrinfo


def install() -> None:
    for name, patch in _patches().items():
        if name in sys.modules:
            patch(sys.modules[name])
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    suffixes = [
        s.strip().lower() for s in os.environ.get("LOCALAZURE_DNS", "").split(",") if s.strip()
    ]
    endpoint = os.environ.get("LOCALAZURE_ENDPOINT")
    if (
        suffixes
        and endpoint
        and getattr(socket.getaddrinfo, "_localazure_endpoint", None) != endpoint
    ):
        _install_resolver(suffixes, endpoint)


install()
