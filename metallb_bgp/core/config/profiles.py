"""BFD profiles and Community aliases: the objects peers and advertisements refer to by name."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from metallb_bgp.api.metallb import (
    BFDProfile,
    Community,
)
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.config.parse import parse_community
from metallb_bgp.core.config.report import Issue, Report, T, err, guarded, has_error, named


def bfd_profile(obj: BFDProfile) -> cfg.BFDProfile:
    spec, default = obj.spec, cfg.BFDProfile(name=obj.metadata.name)

    def pick(value: T | None, fallback: T) -> T:
        return fallback if value is None else value

    return cfg.BFDProfile(
        name=obj.metadata.name,
        receive_interval=pick(spec.receive_interval, default.receive_interval),
        transmit_interval=pick(spec.transmit_interval, default.transmit_interval),
        detect_multiplier=pick(spec.detect_multiplier, default.detect_multiplier),
        echo_interval=pick(spec.echo_interval, default.echo_interval),
        echo_mode=pick(spec.echo_mode, default.echo_mode),
        passive_mode=pick(spec.passive_mode, default.passive_mode),
        minimum_ttl=pick(spec.minimum_ttl, default.minimum_ttl),
    )


@dataclass(frozen=True)
class Aliases:
    good: Mapping[str, cfg.Community]
    bad: Mapping[str, Issue]  # alias -> why it cannot be used (message and the Communities it names)


def community_aliases(
    objects: Mapping[str, Community],
    unnamed: Sequence[Community],
    report: Report,
    check_order: Callable[[Community], tuple[bool, str]],
) -> Aliases:
    """Every alias of every good Community object; duplicated aliases are unusable everywhere.

    `unnamed` are the Community objects left out because their name is not unique: their aliases are
    unusable, and still count as definitions when looking for duplicates.
    """
    owners: dict[str, list[str]] = defaultdict(list)
    for obj in sorted([*objects.values(), *unnamed], key=check_order):
        for alias in obj.spec.communities:
            owners[alias.name].append(obj.metadata.name)
    good: dict[str, cfg.Community] = {}
    bad: dict[str, Issue] = {}
    for obj in unnamed:
        for alias in obj.spec.communities:
            why = f"comes from Community {obj.metadata.name}, which is defined more than once"
            bad[alias.name] = err("", why, named("Community", obj.metadata.name))
    for name, obj in objects.items():
        values = guarded(report, obj, functools.partial(_community_values, obj, owners))
        for alias in obj.spec.communities:
            if len(owners[alias.name]) > 1:
                owner_names = sorted(set(owners[alias.name]))
                why = f"is defined more than once (Community {', '.join(owner_names)})"
                bad[alias.name] = err("", why, *(named("Community", owner) for owner in owner_names))
            elif values is None:
                bad[alias.name] = err("", f"comes from Community {name}, which is invalid", named("Community", name))
            else:
                good[alias.name] = values[alias.name]
    return Aliases(good, bad)


def _community_values(
    obj: Community, owners: Mapping[str, list[str]], issues: list[Issue]
) -> dict[str, cfg.Community] | None:
    values: dict[str, cfg.Community] = {}
    for i, alias in enumerate(obj.spec.communities):
        here = f"spec.communities[{i}]"
        try:
            community = parse_community(alias.value)
        except ValueError as exc:
            issues.append(err(f"{here}.value", str(exc)))
            continue
        first_owner = owners[alias.name][0]  # owners are listed in check order
        if alias.name in values:
            issues.append(err(f"{here}.name", f"alias {alias.name!r} is already defined earlier in this object"))
        elif first_owner != obj.metadata.name:
            message = f"alias {alias.name!r} is already defined in Community {first_owner}"
            issues.append(err(f"{here}.name", message, named("Community", first_owner)))
        else:
            values[alias.name] = community
    return None if has_error(issues) else values
