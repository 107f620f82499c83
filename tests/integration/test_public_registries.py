"""The source side of an import: reading digests from Docker Hub and MCR over the v2 API."""

from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils import registry_v2
from ansible_collections.openadapt.azure_eval.plugins.module_utils.image_ref import parse
from localazure.acr import catalog


def test_docker_hub_digest_follows_the_bearer_challenge(azure):
    before = len(azure.requests())
    digest = registry_v2.manifest_digest(parse("docker.io/windowsarena/winarena:latest"))
    assert digest == catalog.WINARENA.digest
    hosts = [
        (r["host"], r["status"])
        for r in azure.requests()[before:]
        if not r["path"].startswith("/_localazure")
    ]
    assert hosts == [
        ("registry-1.docker.io", 401),
        ("auth.docker.io", 200),
        ("registry-1.docker.io", 200),
    ]


def test_mcr_serves_anonymously(azure):
    ref = parse("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest")
    assert registry_v2.manifest_digest(ref) == catalog.AZUREML_OPENMPI.digest


def test_missing_tag_is_not_found(azure):
    with pytest.raises(registry_v2.ImageNotFound, match="does not exist"):
        registry_v2.manifest_digest(parse("windowsarena/winarena:no-such-tag"))


def test_missing_repository_is_not_found_with_a_hint(azure):
    with pytest.raises(registry_v2.ImageNotFound, match="private or does not exist"):
        registry_v2.manifest_digest(parse("windowsarena/no-such-image:latest"))


def test_unreachable_registry_is_reported_as_such(azure):
    with pytest.raises(registry_v2.RegistryUnreachable):
        registry_v2.manifest_digest(parse("127.0.0.1:9/app:latest"), timeout=2)
