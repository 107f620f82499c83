"""Which container of a group ``aci_follow`` follows, and the error when there is none."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils import aci_follow


def group(*names: str) -> SimpleNamespace:
    return SimpleNamespace(containers=[SimpleNamespace(name=n) for n in names])


def test_the_only_container_is_followed_when_none_is_named():
    assert aci_follow._container_of(group("main"), "run-1", None).name == "main"


def test_the_named_container_is_followed():
    assert aci_follow._container_of(group("a", "b"), "run-1", "b").name == "b"


@pytest.mark.parametrize(
    ("names", "wanted", "message"),
    [
        (("a", "b"), None, "has 2 containers (a, b): name the one to follow"),
        (("main",), "run-1", "has no container 'run-1' (main)"),
        ((), None, "has 0 containers (none)"),
    ],
)
def test_a_container_that_cannot_be_chosen_is_a_clear_error(names, wanted, message):
    with pytest.raises(
        aci_follow.GroupFailed, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        aci_follow._container_of(group(*names), "run-1", wanted)
