# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registered tiers: every module of this package other than the shared ones is a tier and
exposes ``TIER`` (a :class:`~.base.TierSpec`). Adding a tier is adding its module (and its
playbook, ``playbooks/<name>.yml``); nothing else names it."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from ansible_collections.openadapt.azure_eval.plugins.module_utils import tiers as _package
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import TierSpec

_SHARED = frozenset({"base", "common", "registry"})


class UnknownTier(LookupError):
    pass


@functools.cache
def tiers() -> dict[str, TierSpec]:
    """Every registered tier by name."""
    found: dict[str, TierSpec] = {}
    for module in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if module.name in _SHARED or module.name.startswith("_"):
            continue
        spec = importlib.import_module(f"{_package.__name__}.{module.name}").TIER
        if spec.name in found:
            raise ValueError(f"two tier modules register the tier {spec.name!r}")
        found[spec.name] = spec
    return found


def names() -> list[str]:
    return sorted(tiers())


def get(name: str) -> TierSpec:
    try:
        return tiers()[name]
    except KeyError:
        raise UnknownTier(
            f"unknown tier {name!r}; registered tiers: {', '.join(names())}"
        ) from None
