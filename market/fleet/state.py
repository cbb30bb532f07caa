"""The fleet's allocation state: a deployment and the changes executed actions made to it,
oldest first. An AdjustExposure scales sector allocations and a SpawnArbMission opens a long-short
pair of sector baskets, each clipped to the setup's limits; a change takes effect from the first
bar after its execution's market time and never before an earlier one. Computed without bars."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from market.fleet.setup import DAY_NANOS, FleetSetup, _frozen
from qtmesh.base.errors import FailedPrecondition, InvalidArgument


@dataclasses.dataclass(frozen=True)
class Cause:
    """The executed action behind a change."""

    action_key: str
    action_id: str
    plan_sequence: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArbMission:
    id: str
    long_sector: str
    short_sector: str
    allocation: float
    open_time: int
    close_time: int
    action_id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetChange:
    """One executed action: the allocations after it and the mission it opened, if any."""

    sequence: int
    time: int
    cause: Cause
    allocations: Mapping[str, float]
    mission: ArbMission | None
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocations", _frozen(self.allocations))


@dataclasses.dataclass(frozen=True)
class FleetState:
    """A deployment and the changes executed on it, oldest first."""

    setup: FleetSetup
    changes: tuple[FleetChange, ...] = ()

    @property
    def allocations(self) -> Mapping[str, float]:
        return self.changes[-1].allocations if self.changes else self.setup.initial_allocations

    @property
    def missions(self) -> list[ArbMission]:
        return [c.mission for c in self.changes if c.mission is not None]

    def allocations_at(self, time: int) -> Mapping[str, float]:
        """Allocations in effect for a bar at ``time``."""
        current = self.setup.initial_allocations
        for change in self.changes:
            if change.time < time:
                current = change.allocations
        return current

    def next_time(self, clock_time: int) -> int:
        """The time a change executed at ``clock_time`` takes: never before an earlier one."""
        return max(clock_time, self.changes[-1].time if self.changes else clock_time)

    def in_use(self, at: int) -> float:
        """Sector allocations plus the allocation of missions still open at ``at``."""
        open_missions = sum(m.allocation for m in self.missions if m.close_time > at)
        return sum(self.allocations.values()) + open_missions

    def with_change(self, change: FleetChange) -> FleetState:
        return FleetState(self.setup, (*self.changes, change))

    def adjust_exposure(
        self, sector: str, factor: float, *, at: int, cause: Cause, field: str
    ) -> FleetChange:
        """Scales one sector's allocation (all sectors' with ``sector`` "") by ``factor``,
        clipped to max_sector_allocation and to what max_total_allocation leaves."""
        limits = self.setup.limits
        if not (math.isfinite(factor) and 0 <= factor <= limits.max_factor):
            raise InvalidArgument(f"{field}.factor", f"{factor} is not in 0..{limits.max_factor}")
        chosen = (
            self.setup.sectors
            if sector == ""
            else (self.setup.check_sector(sector, field=f"{field}.sector"),)
        )
        new = dict(self.allocations)
        in_use = self.in_use(at)
        notes = []
        for s in chosen:
            old = new[s]
            wanted = old * factor
            value = min(wanted, limits.max_sector_allocation)
            if value > old:
                value = min(value, old + max(0.0, limits.max_total_allocation - in_use))
            in_use += value - old
            new[s] = value
            clipped = ""
            if value < wanted - 1e-12:
                clipped = " (capped by max_sector_allocation/max_total_allocation)"
            notes.append(f"{s} {old:.2%} -> {value:.2%}{clipped}")
        detail = f"allocation x{factor:g}: " + "; ".join(notes)
        return FleetChange(
            sequence=len(self.changes) + 1,
            time=at,
            cause=cause,
            allocations=new,
            mission=None,
            detail=detail,
        )

    def spawn_arb_mission(
        self,
        long_sector: str,
        short_sector: str,
        allocation: float,
        *,
        at: int,
        cause: Cause,
        field: str,
    ) -> FleetChange:
        """Opens a long-short pair of sector baskets with ``allocation`` of equity per leg,
        clipped to max_arb_allocation and to what max_total_allocation leaves."""
        limits = self.setup.limits
        self.setup.check_sector(long_sector, field=f"{field}.long_sector")
        self.setup.check_sector(short_sector, field=f"{field}.short_sector")
        if long_sector == short_sector:
            raise InvalidArgument(f"{field}.short_sector", "must differ from long_sector")
        if not (math.isfinite(allocation) and 0 < allocation <= 1):
            raise InvalidArgument(f"{field}.allocation", f"{allocation} is not in (0, 1]")
        headroom = limits.max_total_allocation - self.in_use(at)
        value = min(allocation, limits.max_arb_allocation, headroom)
        if value <= 1e-9:
            raise FailedPrecondition(
                f"no allocation left for an arb-mission: {self.in_use(at):.2%} of equity is in "
                f"use and max_total_allocation is {limits.max_total_allocation:.2%}"
            )
        sequence = len(self.changes) + 1
        mission = ArbMission(
            id=f"arb-{sequence}",
            long_sector=long_sector,
            short_sector=short_sector,
            allocation=value,
            open_time=at,
            close_time=at + limits.arb_mission_nanos,
            action_id=cause.action_id,
        )
        clipped = " (capped)" if value < allocation - 1e-12 else ""
        days = limits.arb_mission_nanos / DAY_NANOS
        return FleetChange(
            sequence=sequence,
            time=at,
            cause=cause,
            allocations=self.allocations,
            mission=mission,
            detail=f"{mission.id}: long {long_sector} / short {short_sector}, "
            f"{value:.2%} of equity per leg{clipped}, for {days:g} days",
        )
