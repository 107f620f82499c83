"""``group/openadapt.azure_eval.azure`` gives the credentials to every module the collection's
own plays call: its modules, and the azure.azcollection modules named in its roles, playbooks,
examples and test playbooks (a module missing from the group would run without credentials)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["roles", "playbooks", "plugins", "tests/integration/playbooks", "site.yml", "README.md"]
AZCOLLECTION_MODULE = re.compile(r"\bazure\.azcollection\.azure_rm_[a-z_]+")


def _group() -> list[str]:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    return runtime["action_groups"]["azure"]


def _files(source: str):
    path = REPO / source
    if path.is_file():
        yield path
        return
    for pattern in ("*.yml", "*.yaml", "*.py", "*.md"):
        yield from path.rglob(pattern)


def test_every_azcollection_module_the_collection_calls_is_in_its_group():
    called = {
        name
        for source in SOURCES
        for path in _files(source)
        for name in AZCOLLECTION_MODULE.findall(path.read_text())
    }
    assert called, "no azure.azcollection module found: the search is wrong"
    assert sorted(called - set(_group())) == []


# Modules that take no Azure credentials (module_defaults would hand them unknown options).
NO_AZURE_CREDENTIALS = {"image_release"}  # the pipeline's local steps: git and files only


def test_every_module_of_the_collection_that_calls_azure_is_in_its_group():
    modules = {p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__"}
    own = {name for name in _group() if "." not in name}
    assert sorted(own - modules) == []
    assert sorted(modules - own) == sorted(NO_AZURE_CREDENTIALS)


def test_the_plays_name_only_the_collections_group():
    # azcollection's own group would be resolved again in every play (390 modules, 0.3 s a play).
    plays = [p for source in SOURCES for p in _files(source) if p.suffix == ".yml"]
    assert plays
    assert [str(p) for p in plays if "group/azure.azcollection.all" in p.read_text()] == []
