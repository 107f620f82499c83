"""The collection as users get it: built by ansible-galaxy (no run output, state, build or CI
leftovers in the tarball) and installed into another project, which uses it by FQCN against the
emulator with nothing of this repository but the Python packages."""

from __future__ import annotations

import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
from playbook_runner import REGISTRY, REPO, RG, VENV_BIN, running_playground

# Whole ansible-playbook runs: minutes each on a loaded 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

SITE_PACKAGES = REPO / ".venv" / "lib" / "python3.11" / "site-packages"
# Made in the copy that is built: what a user's checkout holds after runs and builds.
LEFTOVERS = {
    "reports/waa-aml.json": "{}",
    ".state/runs/waa-aml/status.json": "{}",
    "openadapt_azure_eval.egg-info/PKG-INFO": "x",
    "tests/output/junit.xml": "x",
    "plugins/modules/__pycache__/acr_import.cpython-311.pyc": "x",
}


def _sh(*argv, cwd: Path, env=None, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build")
    source = root / "source"
    files = _sh("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).stdout.split()
    for name in files:
        path = REPO / name
        if path.is_file() and not path.is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes(path.read_bytes())
    for name, text in LEFTOVERS.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    _sh(VENV_BIN / "ansible-galaxy", "collection", "build", "--output-path", root, cwd=source)
    [built] = root.glob("openadapt-azure_eval-*.tar.gz")
    return built


def test_the_tarball_holds_the_collection_and_no_run_output(tarball):
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    for needed in (
        "MANIFEST.json",
        "LICENSE",
        "meta/runtime.yml",
        "meta/execution-environment.yml",
        "requirements.txt",
        "bindep.txt",
        "changelogs/changelog.yaml",
        "plugins/modules/eval_run.py",
        "plugins/action/eval_run.py",
        "roles/acr/tasks/main.yml",
        "playbooks/registry.yml",
        "worker/waa_worker.py",
    ):
        assert needed in names, needed
    unwanted = [
        n
        for n in names
        if n.split("/")[0] in ("reports", ".state", ".ci", ".venv", "collections", "localazure")
        or ".egg-info" in n
        or "__pycache__" in n
        or n.startswith("tests/output")
        or n.endswith(".tar.gz")
    ]
    assert unwanted == []


def test_another_project_uses_the_installed_collection_by_fqcn(tarball, tmp_path):
    collections = tmp_path / "collections"
    _sh(
        VENV_BIN / "ansible-galaxy",
        "collection",
        "install",
        "--no-deps",
        "--force",
        "-p",
        collections,
        tarball,
        cwd=tmp_path,
    )
    project = tmp_path / "project"
    project.mkdir()
    with running_playground(tmp_path / "playground") as playground:
        settings = playground.emulator.settings
        (project / "inventory.yml").write_text(
            textwrap.dedent(
                f"""\
                all:
                  hosts:
                    localhost:
                      ansible_connection: local
                      ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
                  vars:
                    azure_use_emulator: true
                    localazure_port: {settings.port}
                    localazure_state_dir: {settings.state_dir}
                    azure_environment: {{}}
                    azure_auth: {{}}
                """
            )
        )
        (project / "registry.yml").write_text(
            textwrap.dedent(
                """\
                - name: The registry layer of the installed collection
                  ansible.builtin.import_playbook: openadapt.azure_eval.registry
                """
            )
        )
        env = playground.env(
            {
                "ANSIBLE_CONFIG": "",
                "ANSIBLE_COLLECTIONS_PATH": f"{collections}:{SITE_PACKAGES}",
                "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
            }
        )
        done = _sh(
            VENV_BIN / "ansible-playbook",
            "-i",
            "inventory.yml",
            "registry.yml",
            cwd=project,
            env=env,
        )
        assert str(collections / "ansible_collections" / "openadapt" / "azure_eval") in (
            _sh(
                VENV_BIN / "ansible-doc",
                "openadapt.azure_eval.acr_import",
                cwd=project,
                env=env,
            ).stdout
        )
        assert "failed=0" in done.stdout
        assert playground.registries.registries.get(RG, REGISTRY).login_server
