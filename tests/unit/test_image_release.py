from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils import image_release as rel

ROOT = "base_images/docker/public"


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """Two images committed, then LICENSE.txt of one of them changed."""
    for folder in ("cpu-ubuntu22.04", "gpu-cuda12"):
        path = tmp_path / ROOT / "base" / folder
        path.mkdir(parents=True)
        (path / "Dockerfile").write_text("FROM mcr.microsoft.com/azurelinux/base/python:3.12\n")
        (path / "LICENSE.txt").write_text("MIT\n")
    (tmp_path / ROOT / "base" / "cpu-ubuntu22.04" / "Dockerfile.private").write_text(
        "COPY LICENSE.txt /licenses/\n"
    )
    (tmp_path / ROOT / "base" / "cpu-ubuntu22.04" / "tests.json").write_text(
        json.dumps({"combinations": [{"name": "single", "command": "python -V"}]})
    )
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "-c", "user.email=t@e", "-c", "user.name=t", "add", "-A")
    git(tmp_path, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "images")
    git(tmp_path, "checkout", "-qb", "change")
    (tmp_path / ROOT / "base" / "gpu-cuda12" / "LICENSE.txt").write_text("MIT, 2026\n")
    git(tmp_path, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qam", "licence")
    return tmp_path


def test_a_changed_file_selects_its_image_only(repo):
    images, how = rel.discover(repo, [ROOT], "main")
    assert [i.folder for i in images] == ["gpu-cuda12"]
    assert how == "changed since main"
    assert images[0].untested and images[0].staged_name("42") == "base:gpu-cuda12--42"


def test_no_change_selects_every_image(repo):
    images, how = rel.discover(repo, [ROOT], "HEAD")
    assert [i.folder for i in images] == ["cpu-ubuntu22.04", "gpu-cuda12"]
    assert how == "all"
    assert images[0].tests == [{"name": "single", "command": "python -V"}]


def test_build_context_appends_the_private_dockerfile(repo, tmp_path):
    [cpu, _] = rel.discover(repo, [ROOT], None)[0]
    context = rel.build_context(repo, cpu, tmp_path / "ctx")
    assert (context / "Dockerfile").read_text() == (
        "FROM mcr.microsoft.com/azurelinux/base/python:3.12\nCOPY LICENSE.txt /licenses/\n"
    )
    assert not (context / "Dockerfile.private").exists()


def test_release_tags():
    today = dt.date(2026, 3, 2)
    assert rel.release_tag(today, None, None) == "20260302.v1"
    assert rel.release_tag(today, 3, None) == "20260302.v3"
    assert rel.release_tag(today, None, "20260101.v9") == "20260101.v9"
    with pytest.raises(rel.ReleaseError, match="mutually exclusive"):
        rel.release_tag(today, 2, "x")


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        ("2026-12-01", "2026-12-09"),
        ("2026-12-09", "2026-12-09"),
        ("2026-12-10", "2027-01-13"),
        ("2027-01-14", "2027-02-10"),
    ],
)
def test_next_rebuild_is_the_second_wednesday(today, expected):
    assert rel.next_rebuild(dt.date.fromisoformat(today)).isoformat() == expected


def test_import_config_names_where_the_secret_lives_never_the_secret(repo):
    images, _ = rel.discover(repo, [ROOT], "main")
    uri = "https://releasevault.vault.azure.net/secrets/staging-reader"
    [entry] = rel.import_config(
        images,
        build_number="7",
        staging="stage.azurecr.io",
        destination_prefix="public/azureml",
        tag="20260302.v1",
        reader_client_id="c1d",
        reader_secret_uri=uri,
    )
    assert entry == {
        "source": {
            "imageName": "stage.azurecr.io/base:gpu-cuda12--7",
            "registryUsername": "c1d",
            "registryPassword": {"keyVaultSecretUri": uri},
        },
        "destination": {
            "imageNames": [
                "public/azureml/gpu-cuda12:20260302.v1",
                "public/azureml/gpu-cuda12:latest",
            ]
        },
    }
    with pytest.raises(rel.ReleaseError, match="Key Vault secret URI"):
        rel.import_config(
            images,
            build_number="7",
            staging="s",
            destination_prefix="p",
            tag="t",
            reader_client_id="c",
            reader_secret_uri="plain-secret-value",
        )
