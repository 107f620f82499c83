"""The examples users copy: every module's ``EXAMPLES`` and every role README's example play,
read from the sources and run inside the play the README shows (the endpoint chosen as the layer
playbooks do). The tests are in test_layers.py, after the layers the examples name were made."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml
from playbook_runner import REPO, Run, git

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
        "module_defaults": {"group/openadapt.azure_eval.azure": "{{ azure_auth }}"},
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

    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "start")
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    (image / "Dockerfile").write_text("FROM mcr.microsoft.com/azurelinux/base/python:3.12\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "cpu image")
    return repo


def user_project(root: Path) -> Path:
    """A user's project next to this one's task set and build context, as the examples expect
    (``{{ playbook_dir }}/../localazure``, ``{{ playbook_dir }}/../docker``)."""
    (root / "playbooks").mkdir()
    for name in ("localazure", "docker"):
        (root / name).symlink_to(REPO / name)
    return root


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
