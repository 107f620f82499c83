# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``tier=auto``: the listed tiers as one (``tier_pool.TierPool``), in fallback or spread mode.

``tier_options``:

    tiers: [aml, batch, vm]            # members, in fallback order
    mode: fallback | spread
    members:                           # per member (the key is the member's name)
      aml: {options: {...}, workers: 10}
      aml_small: {tier: aml, options: {...}, workers: 4, sizes: [simple]}
    recover_after: 600                 # seconds before a member taken out gets a trial job
    breaker_threshold: 3

A member's ``tier`` is the registered tier it is (default: its name); its ``options`` are that
tier's ``tier_options``, checked against its argument spec. A member that cannot be built (its
credentials or price cannot be found: the tier's ``setup_errors``) starts out of rotation, as
long as one member can run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier_pool import (
    MODES,
    NoUsableTier,
    TierPool,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    TierContext,
    TierSpec,
)

NAME = "auto"

ARGUMENT_SPEC = dict(
    tiers=dict(type="list", elements="str", required=True),
    mode=dict(type="str", default="fallback", choices=list(MODES)),
    members=dict(type="dict", default={}),
    recover_after=dict(type="float", default=600.0),
    breaker_threshold=dict(type="int", default=3),
)


class PoolSetupError(ValueError):
    """The pool's settings are wrong, or none of its tiers could be set up."""


def member_specs(options: Mapping[str, Any]) -> list[tuple[str, TierSpec, dict[str, Any]]]:
    """(member name, its tier's spec, its settings) for every listed member, checked."""
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import registry

    names = list(options.get("tiers") or [])
    if not names:
        raise PoolSetupError("eval_tiers must list at least one tier")
    if len(set(names)) != len(names):
        raise PoolSetupError(f"eval_tiers lists a tier twice: {names}")
    members = dict(options.get("members") or {})
    unknown = sorted(set(members) - set(names))
    if unknown:
        raise PoolSetupError(f"settings for tiers not listed in eval_tiers: {unknown}")
    found = []
    for name in names:
        settings = dict(members.get(name) or {})
        tier_name = settings.get("tier", name)
        if tier_name == NAME:
            raise PoolSetupError("tier 'auto' cannot be a member of itself")
        try:
            spec = registry.get(tier_name)
        except registry.UnknownTier as err:
            raise PoolSetupError(str(err)) from None
        workers = settings.get("workers", 1)
        if not isinstance(workers, int) or workers < 1:
            raise PoolSetupError(f"workers of tier {name} must be a whole number >= 1")
        found.append((name, spec, settings))
    return found


def _checked_options(spec: TierSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    checked = ArgumentSpecValidator(dict(spec.argument_spec)).validate(dict(options or {}))
    if checked.error_messages:
        raise PoolSetupError(
            f"tier_options of tier {spec.name}: " + "; ".join(checked.error_messages)
        )
    return checked.validated_parameters


def build(context: TierContext) -> TierPool:
    built = []
    unusable: dict[str, str] = {}
    for name, spec, settings in member_specs(context.options):
        options = _checked_options(spec, settings.get("options") or {})
        member_context = replace(
            context, options=options, state_dir=context.state_dir / name, run_name=context.run_name
        )
        try:
            tier = spec.build(member_context)
        except spec.setup_errors as err:
            unusable[name] = str(err)
            tier = None
        built.append((name, tier, int(settings.get("workers", 1)), settings.get("sizes")))
    try:
        pool = TierPool(
            [(name, tier, workers) for name, tier, workers, _sizes in built],
            mode=context.options.get("mode", "fallback"),
            breaker_threshold=int(context.options.get("breaker_threshold", 3)),
            recover_after=float(context.options.get("recover_after", 600.0)),
            unusable=unusable,
        )
    except NoUsableTier as err:
        raise PoolSetupError(str(err)) from None
    for name, _tier, _workers, sizes in built:
        if sizes:
            pool.member_sizes[name] = list(sizes)
    return pool


def fingerprint(options: Mapping[str, Any]) -> dict[str, Any]:
    """The set of tiers and each one's own target make the run; order, mode and workers are
    tuning."""
    return {
        "tiers": {
            name: {"tier": spec.name, **spec.fingerprint(settings.get("options") or {})}
            for name, spec, settings in member_specs(options)
        }
    }


TIER = TierSpec(
    name=NAME,
    argument_spec=ARGUMENT_SPEC,
    build=build,
    fingerprint=fingerprint,
    setup_errors=(PoolSetupError,),
)
