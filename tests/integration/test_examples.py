"""Every module's ``EXAMPLES`` and every role README's example play, run on the emulator as a user
copies them: inside the play the README shows (the endpoint chosen as the layer playbooks do),
after ``playbooks/aml.yml`` made the layers they name (registry, pull identity, workspace,
cluster, environment, golden image). Every example task runs (none is skipped) and leaves what
it says in Azure.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.storage.blob import BlobServiceClient
from playbook_runner import CLUSTER, PLAYBOOKS, REPO, RG, Run, running_playground

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

MODULES = REPO / "plugins" / "modules"
ROLES = REPO / "roles"
GOLDEN = REPO / "localazure" / "workload" / "data" / "golden_image" / "storage"
# The modules' examples in the order a user meets them (later ones read what earlier ones made).
MODULE_ORDER = [
    "azure_caller_info",
    "acr_import",
    "acr_build",
    "aml_environment",
    "aml_compute",
    "aml_job",
    "aml_job_info",
    "aml_job_set",
    "blob_upload",
    "eval_run",
    "file_share_transfer",
    "aci_follow",
    "image_release",
]
_TASK_LINE = re.compile(r"^TASK \[(?P<name>.+?)\] \*+$")
_STATUS_LINE = re.compile(r"^(?P<status>ok|changed|skipping|failed|fatal): \[localhost\]")


def module_examples(name: str) -> list[dict]:
    tree = ast.parse((MODULES / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["EXAMPLES"]:
            return yaml.safe_load(node.value.value)
    raise AssertionError(f"{name} has no EXAMPLES")


def role_example_plays() -> dict[str, list[dict]]:
    """The ```yaml blocks of each role's README that are plays."""
    found = {}
    for readme in sorted(ROLES.glob("*/README.md")):
        for block in re.findall(r"```yaml\n(.*?)```", readme.read_text(), re.S):
            plays = yaml.safe_load(block)
            if isinstance(plays, list) and all(isinstance(p, dict) and "hosts" in p for p in plays):
                found.setdefault(readme.parent.name, []).extend(plays)
    return found


def on_the_endpoint(play: dict) -> dict:
    """The play as the README's "in your own playbooks" section has it."""
    return {
        **play,
        "gather_facts": play.get("gather_facts", False),
        "environment": "{{ azure_environment }}",
        "module_defaults": {
            "group/azure.azcollection.all": "{{ azure_auth }}",
            "group/openadapt.azure_eval.azure": "{{ azure_auth }}",
        },
    }


def task_statuses(run: Run) -> dict[str, set[str]]:
    """Each task's name and the statuses Ansible printed for it."""
    statuses: dict[str, set[str]] = {}
    current = None
    for line in run.stdout.splitlines():
        task = _TASK_LINE.match(line)
        if task:
            current = task["name"]
            statuses.setdefault(current, set())
            continue
        status = _STATUS_LINE.match(line)
        if status and current:
            statuses[current].add(status["status"])
    return statuses


def release_repository(root: Path) -> Path:
    """A git repository whose one image folder changed since ``origin/main``."""
    repo = root / "images"
    image = repo / "base_images" / "docker" / "public" / "base" / "cpu-py312"
    image.mkdir(parents=True)
    (repo / "README.md").write_text("images\n")

    def git(*args: str) -> None:
        subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "-c",
                "user.email=ci@example.com",
                "-c",
                "user.name=ci",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "start")
    git("update-ref", "refs/remotes/origin/main", "HEAD")
    (image / "Dockerfile").write_text("FROM mcr.microsoft.com/azurelinux/base/python:3.12\n")
    git("add", "-A")
    git("commit", "-qm", "cpu image")
    return repo


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    with running_playground(tmp_path_factory.mktemp("examples")) as playground:
        setup = playground.play("-e", "eval_max_tasks=1", playbook=PLAYBOOKS / "aml.yml")
        assert setup.returncode == 0, setup.tail()
        yield playground


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project next to this one's task set and build context, as the examples expect
    (``{{ playbook_dir }}/../localazure``, ``{{ playbook_dir }}/../docker``)."""
    (tmp_path / "playbooks").mkdir()
    for name in ("localazure", "docker"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def run_examples(playground, project: Path, plays: list[dict], *extra: str) -> Run:
    playbook = project / "playbooks" / "examples.yml"
    endpoint = {"ansible.builtin.import_playbook": "openadapt.azure_eval.azure_endpoint"}
    playbook.write_text(yaml.safe_dump([endpoint, *map(on_the_endpoint, plays)], sort_keys=False))
    return playground.play(*extra, playbook=playbook, cwd=project, timeout=1500)


def assert_every_task_ran(run: Run, names: list[str]) -> None:
    assert run.returncode == 0, run.tail(120)
    statuses = task_statuses(run)
    for name in names:
        assert name in statuses, f"example task {name!r} never ran:\n{run.tail()}"
        assert statuses[name] and statuses[name] <= {"ok", "changed"}, (name, statuses[name])


def test_every_module_has_examples_in_the_order():
    modules = {path.stem for path in MODULES.glob("*.py") if path.stem != "__init__"}
    assert set(MODULE_ORDER) == modules, "add the new module's examples to MODULE_ORDER"
    for name in MODULE_ORDER:
        examples = module_examples(name)
        assert examples and all(task.get("name") for task in examples), name


def test_every_modules_examples_run_on_the_emulator(playground, project):
    plays, names = [], []
    for module in MODULE_ORDER:
        tasks = module_examples(module)
        plays.append({"name": f"Examples of {module}", "hosts": "localhost", "tasks": tasks})
        names += [task["name"] for task in tasks]
    code = project / "playbooks" / "code"
    code.mkdir()
    (code / "main.py").write_text("print('evaluated')\n")

    run = run_examples(
        playground,
        project,
        plays,
        "-e",
        f"waa_prepared_image={GOLDEN}",
        "-e",
        f"release_repo={release_repository(project)}",
        "-e",
        "release_build_number=20260101.1",
    )

    assert_every_task_ran(run, names)
    ml = playground.ml
    assert ml.jobs.get("waa-smoke-1").status in ("Completed", "Canceled")
    assert ml.compute.get(CLUSTER).max_instances == 10
    assert (project / "playbooks" / "code-from-share" / "main.py").read_text() == (
        "print('evaluated')\n"
    )
    aci = playground.client(ContainerInstanceManagementClient)
    assert [group.name for group in aci.container_groups.list_by_resource_group(RG)] == []
    blobs = BlobServiceClient(
        "https://openadaptwaaimages.blob.core.windows.net",
        credential=playground.emulator.credential(),
    ).get_container_client("waa-golden-image")
    uploaded = {blob.name for blob in blobs.list_blobs(name_starts_with="storage/")}
    assert {f"storage/{path.name}" for path in GOLDEN.iterdir()} <= uploaded
    assert (project / ".state" / "runs").is_dir()  # eval_run's ledger and status
    # Relative paths are the playbook's: discover's output, aml_job_set's run information.
    assert (project / "playbooks" / "release" / "run_information.txt").is_file()


def test_every_roles_readme_example_runs_on_the_emulator(playground, project):
    examples = role_example_plays()
    assert set(examples) >= {"acr", "vm_pool"}, examples
    plays = [play for role in sorted(examples) for play in examples[role]]

    run = run_examples(playground, project, plays)

    assert run.returncode == 0, run.tail(120)
    assert run.recap()["failed"] == 0
    names = {registry.name for registry in playground.registries.registries.list()}
    assert "myevals" in names
