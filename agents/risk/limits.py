"""What the risk officer owns: the risk limits, and how actions change them; and the halts it
reads from the market's fleet, which owns the kill switch (HALT_TRADING and RESUME_TRADING are
the fleet's to execute, since the fleet is what stops trading).

Limits are fractions of equity. ADJUST_RISK_LIMITS sets the limits it gives and leaves those it
gives as 0 unchanged; each must lie in (0, its bound]. A sector entry sets that sector's exposure
limit (0 removes the override, so the sector falls back to ``max_sector_exposure``); sectors must
be the market's. Every function returns the new policy and a sentence saying what changed, or
raises InvalidArgument naming the field, so a rejected action changes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from typing import Any

from market.fleet import FleetReport
from qtmesh.base.contract import RiskLimits
from qtmesh.base.errors import FailedPrecondition, InvalidArgument

PORTFOLIO = "portfolio"
# Upper bound of each limit; every limit is above 0.
BOUNDS = {
    "max_var_95": 1.0,
    "max_drawdown": 1.0,
    "max_gross_exposure": 10.0,
    "max_sector_exposure": 10.0,
}


@dataclasses.dataclass(frozen=True)
class Halt:
    scope: str  # PORTFOLIO or a sector
    since: int  # market time of the halt, Unix nanoseconds
    reason: str
    action_id: str = ""


@dataclasses.dataclass(frozen=True)
class RiskPolicy:
    limits: RiskLimits

    def sector_limit(self, sector: str) -> float:
        return self.limits.sector_exposure_limits.get(sector, self.limits.max_sector_exposure)

    def with_limits(
        self, given: RiskLimits, *, sectors: Collection[str] | None, field: str
    ) -> tuple[RiskPolicy, str]:
        old = self.limits
        values = {name: getattr(old, name) for name in BOUNDS}
        notes = []
        for name, bound in BOUNDS.items():
            value = getattr(given, name)
            if value == 0:
                continue
            if not (math.isfinite(value) and 0 < value <= bound):
                raise InvalidArgument(f"{field}.{name}", f"{value} is not in (0, {bound:g}]")
            notes.append(f"{name} {values[name]:.2%} -> {value:.2%}")
            values[name] = value
        overrides = dict(old.sector_exposure_limits)
        for sector, value in sorted(given.sector_exposure_limits.items()):
            where = f"{field}.sector_exposure_limits[{sector}]"
            check_sector(sector, sectors, field=where)
            bound = BOUNDS["max_sector_exposure"]
            if not (math.isfinite(value) and 0 <= value <= bound):
                raise InvalidArgument(where, f"{value} is not in [0, {bound:g}] (0 removes it)")
            before = overrides.get(sector)
            if value == 0:
                if before is not None:
                    notes.append(f"{sector} exposure limit {before:.2%} -> the default")
                overrides.pop(sector, None)
            else:
                shown = f"{before:.2%}" if before is not None else "the default"
                notes.append(f"{sector} exposure limit {shown} -> {value:.2%}")
                overrides[sector] = value
        if not notes:
            raise InvalidArgument(field, "sets no limit (a limit given as 0 stays unchanged)")
        limits = RiskLimits(**values, sector_exposure_limits=overrides)
        return dataclasses.replace(self, limits=limits), (
            "limits: "
            + "; ".join(notes)
            + " (the fleet trades as before: the officer's next breaches, and the cuts or halts "
            "they call for, are judged by them)"
        )

    def to_json(self) -> dict[str, Any]:
        limits = self.limits
        return {
            "limits": {
                **{name: getattr(limits, name) for name in BOUNDS},
                "sector_exposure_limits": dict(limits.sector_exposure_limits),
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RiskPolicy:
        # A policy stored before the fleet owned the kill switch also holds "halts": ignored.
        return cls(limits=RiskLimits(**data["limits"]))


def fleet_halts(fleet: FleetReport) -> tuple[Halt, ...]:
    """The scopes the fleet has halted, each with the change that halted it."""
    halts = []
    for scope in sorted(fleet.halted):
        since, reason, action_id = fleet.clock_time, "halted", ""
        before: frozenset[str] = frozenset()
        for change in fleet.changes:
            if scope in change.halted and scope not in before:
                since = change.time
                reason = f"fleet change {change.sequence}: {change.detail}"
                action_id = change.cause.action_id
            before = change.halted
        halts.append(Halt(scope, since, reason, action_id))
    # The portfolio first: it is the halt that stops everything.
    return tuple(sorted(halts, key=lambda h: (h.scope != PORTFOLIO, h.scope)))


def check_sector(sector: str, sectors: Collection[str] | None, *, field: str) -> str:
    """``sector`` if the market has it; InvalidArgument if not, FailedPrecondition while the
    market's sectors are not known yet."""
    if sectors is None:
        raise FailedPrecondition(
            "the market's sectors are not known yet: the market has not answered"
        )
    if sector not in sectors:
        known = ", ".join(sorted(sectors))
        raise InvalidArgument(field, f"unknown sector {sector!r} (known: {known})")
    return sector


def check_limits(limits: RiskLimits) -> RiskLimits:
    """Configured limits must all be set and within their bounds (ValueError otherwise)."""
    for name, bound in BOUNDS.items():
        value = getattr(limits, name)
        if not (math.isfinite(value) and 0 < value <= bound):
            raise ValueError(f"{name} must be in (0, {bound:g}], got {value}")
    return limits
