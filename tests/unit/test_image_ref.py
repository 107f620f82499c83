from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.image_ref import (
    InvalidImageReference,
    default_target,
    parse,
)


@pytest.mark.parametrize(
    ("text", "registry", "repository", "reference", "api_host"),
    [
        (
            "windowsarena/winarena:latest",
            "docker.io",
            "windowsarena/winarena",
            "latest",
            "registry-1.docker.io",
        ),
        (
            "docker.io/windowsarena/winarena",
            "docker.io",
            "windowsarena/winarena",
            "latest",
            "registry-1.docker.io",
        ),
        ("hello-world", "docker.io", "library/hello-world", "latest", "registry-1.docker.io"),
        (
            "index.docker.io/library/ubuntu:22.04",
            "docker.io",
            "library/ubuntu",
            "22.04",
            "registry-1.docker.io",
        ),
        (
            "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest",
            "mcr.microsoft.com",
            "azureml/openmpi4.1.0-ubuntu22.04",
            "latest",
            "mcr.microsoft.com",
        ),
        (
            "myacr.azurecr.io/team/app:v1.2",
            "myacr.azurecr.io",
            "team/app",
            "v1.2",
            "myacr.azurecr.io",
        ),
        ("localhost:5000/app:dev", "localhost:5000", "app", "dev", "localhost:5000"),
        (
            "docker.io/windowsarena/winarena@sha256:" + "a" * 64,
            "docker.io",
            "windowsarena/winarena",
            "sha256:" + "a" * 64,
            "registry-1.docker.io",
        ),
    ],
)
def test_parse(text, registry, repository, reference, api_host):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.reference, ref.api_host) == (
        registry,
        repository,
        reference,
        api_host,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "Windowsarena/WinArena:latest",
        "app:bad tag",
        "app@sha256:123",
        "app:" + "x" * 129,
        "a//b",
    ],
)
def test_parse_rejects_bad_references(text):
    with pytest.raises(InvalidImageReference):
        parse(text)


def test_repository_and_reference_is_what_acr_import_takes():
    assert parse("docker.io/windowsarena/winarena:latest").repository_and_reference == (
        "windowsarena/winarena:latest"
    )
    digest = "sha256:" + "b" * 64
    assert parse(f"mcr.microsoft.com/x/y@{digest}").repository_and_reference == f"x/y@{digest}"


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("docker.io/windowsarena/winarena:latest", "windowsarena/winarena:latest"),
        ("hello-world", "hello-world:latest"),
        ("mcr.microsoft.com/azureml/base:1", "azureml/base:1"),
    ],
)
def test_default_target_drops_registry_and_library_prefix(text, target):
    assert default_target(parse(text)) == target
