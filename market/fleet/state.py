"""The fleet's state: a deployment and the changes executed actions made to it, oldest first.

An AdjustExposure scales sector allocations and a SpawnArbMission opens a long-short pair of
sector baskets, each clipped to the setup's limits; the strategy actions change the book (see
:mod:`market.fleet.book`); HaltTrading and ResumeTrading set which scopes are halted. A change
takes effect from the first bar after its execution's market time and never before an earlier
one. Computed without bars.

Halts: a scope is "portfolio" or a sector. A halted sector's effective allocation is 0 (its
strategies go flat at the next open, and an arb-mission with a leg in it closes at the close
of the halt's bar)
while its nominal allocation is kept, so a resume restores it. Resuming "portfolio" lifts every
halt; resuming a sector lifts that sector's own halt (a portfolio halt still holds it). Shadows
keep paper trading through a halt: their record measures the strategy, not the fleet.

Meta's scale: the meta-learning OS's risk multiplier times its position-size scale multiplies
every sector's effective allocation (never beyond what max_total_allocation allows), from the
bar after the fleet is given a new version of meta's parameters; each change names the version.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

from market.fleet import book as books
from market.fleet.book import BookEntry, Candidate
from market.fleet.setup import DAY_NANOS, FleetSetup, _frozen
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import StrategyGenome

PORTFOLIO = "portfolio"


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
    """One executed action: the nominal allocations and halted scopes after it, the mission it
    opened, if any, and the book entries it changed."""

    sequence: int
    time: int
    cause: Cause
    allocations: Mapping[str, float]
    mission: ArbMission | None
    detail: str
    book: tuple[BookEntry, ...] = ()
    halted: frozenset[str] = frozenset()
    scale: float = 1.0  # meta's risk multiplier x position-size scale after the change

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocations", _frozen(self.allocations))
        object.__setattr__(self, "halted", frozenset(self.halted))


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

    @property
    def halted(self) -> frozenset[str]:
        return self.changes[-1].halted if self.changes else frozenset()

    @functools.cached_property
    def book(self) -> dict[str, BookEntry]:
        """The book after every change (computed once: the state never changes)."""
        return self.book_at(None)

    @property
    def scale(self) -> float:
        return self.changes[-1].scale if self.changes else 1.0

    def scale_at(self, time: int) -> float:
        current = 1.0
        for change in self.changes:
            if change.time < time:
                current = change.scale
        return current

    def allocations_at(self, time: int) -> Mapping[str, float]:
        """Nominal allocations in effect for a bar at ``time``."""
        current = self.setup.initial_allocations
        for change in self.changes:
            if change.time < time:
                current = change.allocations
        return current

    def halted_at(self, time: int) -> frozenset[str]:
        current: frozenset[str] = frozenset()
        for change in self.changes:
            if change.time < time:
                current = change.halted
        return current

    def effective_allocations(
        self, allocations: Mapping[str, float], halted: frozenset[str]
    ) -> dict[str, float]:
        """What the sectors trade: 0 for a halted one, else the nominal allocation."""
        return {
            s: 0.0 if PORTFOLIO in halted or s in halted else allocations[s]
            for s in self.setup.sectors
        }

    def book_at(self, time: int | None) -> dict[str, BookEntry]:
        """The book for a bar at ``time`` (None: after every change)."""
        current = books.initial_book(self.setup)
        for change in self.changes:
            if time is None or change.time < time:
                current = books.merged(current, change.book)
        return current

    def strategy_ids(self) -> list[str]:
        """Every strategy the book ever held: the deployed ones, then the added in order."""
        ids = [s.id for s in self.setup.strategies]
        seen = set(ids)
        for change in self.changes:
            for e in change.book:
                if e.strategy_id not in seen:
                    seen.add(e.strategy_id)
                    ids.append(e.strategy_id)
        return ids

    def mission_end(self, mission: ArbMission) -> int:
        """The mission's close time, or the first halt of a scope it trades in before that."""
        for change in self.changes:
            if mission.open_time <= change.time < mission.close_time and (
                PORTFOLIO in change.halted
                or mission.long_sector in change.halted
                or mission.short_sector in change.halted
            ):
                return change.time
        return mission.close_time

    def next_time(self, clock_time: int) -> int:
        """The time a change executed at ``clock_time`` takes: never before an earlier one."""
        return max(clock_time, self.changes[-1].time if self.changes else clock_time)

    def in_use(self, at: int) -> float:
        """Sector allocations plus the allocation of missions still open at ``at``."""
        open_missions = sum(m.allocation for m in self.missions if m.close_time > at)
        return sum(self.allocations.values()) + open_missions

    def with_change(self, change: FleetChange) -> FleetState:
        return FleetState(self.setup, (*self.changes, change))

    def _change(
        self,
        *,
        at: int,
        cause: Cause,
        detail: str,
        allocations: Mapping[str, float] | None = None,
        mission: ArbMission | None = None,
        book: tuple[BookEntry, ...] = (),
        halted: frozenset[str] | None = None,
        scale: float | None = None,
    ) -> FleetChange:
        """The next change: what it gives, and everything else as it stands."""
        return FleetChange(
            sequence=len(self.changes) + 1,
            time=at,
            cause=cause,
            allocations=self.allocations if allocations is None else allocations,
            mission=mission,
            detail=detail,
            book=book,
            halted=self.halted if halted is None else halted,
            scale=self.scale if scale is None else scale,
        )

    def apply_meta(
        self,
        *,
        version: int,
        risk_multiplier: float,
        position_size_scale: float,
        at: int,
        cause: Cause,
    ) -> FleetChange:
        """Meta's parameters of ``version``: the product of the two scales, clipped so sector
        allocations times it stay within max_total_allocation."""
        for name, value in (
            ("risk_multiplier", risk_multiplier),
            ("position_size_scale", position_size_scale),
        ):
            if not (math.isfinite(value) and 0 < value <= 100):
                raise InvalidArgument(name, f"{value} is not in (0, 100]")
        if version < 1:
            raise InvalidArgument("version", f"{version} is not a parameter version (>= 1)")
        wanted = risk_multiplier * position_size_scale
        total = sum(self.allocations.values())
        room = self.setup.limits.max_total_allocation / total if total > 0 else wanted
        scale = min(wanted, room)
        clipped = " (capped by max_total_allocation)" if scale < wanted - 1e-12 else ""
        return self._change(
            at=at,
            cause=cause,
            detail=(
                f"meta parameters v{version}: risk multiplier {risk_multiplier:.3g} x position "
                f"scale {position_size_scale:.3g}: positions x{scale:.4g}{clipped} "
                f"(was x{self.scale:.4g})"
            ),
            scale=scale,
        )

    # -- the book ----------------------------------------------------------------------------

    def enable_strategy(
        self,
        *,
        strategy_id: str,
        sector: str,
        genome: StrategyGenome | None,
        weight: float,
        at: int,
        cause: Cause,
        field: str,
    ) -> FleetChange:
        entries, detail = books.enable(
            self.book,
            self.setup,
            strategy_id=strategy_id,
            sector=sector,
            genome=genome,
            weight=weight,
            at=at,
            field=field,
        )
        return self._change(at=at, cause=cause, detail=detail, book=tuple(entries))

    def add_shadows(
        self,
        candidates: list[Candidate],
        *,
        evolution_id: str,
        trials: int,
        at: int,
        cause: Cause,
        field: str,
    ) -> FleetChange:
        entries, detail = books.add_shadows(
            self.book,
            self.setup,
            candidates,
            evolution_id=evolution_id,
            trials=trials,
            at=at,
            field=field,
        )
        return self._change(at=at, cause=cause, detail=detail, book=tuple(entries))

    def disable_strategy(
        self, *, strategy_id: str, at: int, cause: Cause, field: str
    ) -> FleetChange:
        entries, detail = books.disable(self.book, strategy_id=strategy_id, field=field)
        return self._change(at=at, cause=cause, detail=detail, book=tuple(entries))

    def reweight_strategies(
        self, *, weights: Mapping[str, float], at: int, cause: Cause, field: str
    ) -> FleetChange:
        entries, detail = books.reweight(
            self.book, self.setup, self.allocations, weights=weights, field=field
        )
        return self._change(at=at, cause=cause, detail=detail, book=tuple(entries))

    def promote_strategy(
        self, *, strategy_id: str, replaces: str, at: int, cause: Cause, field: str
    ) -> FleetChange:
        entries, detail = books.promote(
            self.book, strategy_id=strategy_id, replaces=replaces, at=at, field=field
        )
        return self._change(at=at, cause=cause, detail=detail, book=tuple(entries))

    # -- halts ---------------------------------------------------------------------------------

    def _scope(self, scope: str, field: str) -> str:
        scope = scope or PORTFOLIO
        if scope != PORTFOLIO:
            self.setup.check_sector(scope, field=f"{field}.scope")
        return scope

    def halt(self, scope: str, *, at: int, cause: Cause, field: str) -> FleetChange:
        scope = self._scope(scope, field)
        if scope in self.halted:
            return self._change(at=at, cause=cause, detail=f"{scope} is already halted")
        what = "every position" if scope == PORTFOLIO else f"{scope}'s positions"
        return self._change(
            at=at,
            cause=cause,
            detail=f"{scope} halted: {what} flat from the next open, nominal allocations kept",
            halted=self.halted | {scope},
        )

    def resume(self, scope: str, *, at: int, cause: Cause, field: str) -> FleetChange:
        scope = self._scope(scope, field)
        halted = frozenset() if scope == PORTFOLIO else self.halted - {scope}
        if halted == self.halted:
            return self._change(at=at, cause=cause, detail=f"{scope} was not halted")
        still = f" ({', '.join(sorted(halted))} still halted)" if halted else ""
        return self._change(
            at=at,
            cause=cause,
            detail=f"{scope} resumed: trading from the next open{still}",
            halted=halted,
        )

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
        return self._change(at=at, cause=cause, detail=detail, allocations=new)

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
        return self._change(
            at=at,
            cause=cause,
            detail=f"{mission.id}: long {long_sector} / short {short_sector}, "
            f"{value:.2%} of equity per leg{clipped}, for {days:g} days",
            mission=mission,
        )
