"""The strategy book the strategy officer owns: which strategies are enabled, at what weight, and
at which stage (shadow or production).

The book starts from the paper fleet's deployment (read with GetFleet): every strategy the fleet
deploys is in production and enabled, and its weight is its share of the fleet's strategy
capital (the sector's allocation split among the sector's strategies, over the total). Executed
actions overlay it, and only they change it; the overlay is what is persisted:

* ENABLE_STRATEGY of a strategy in the book enables it (with the weight given, if any); of a new
  strategy, with its genome and a known sector, adds it as a **shadow** from the market time of
  the execution: it trades on paper, with no weight, on the symbol its id names
  (``SYMBOL/...``) or else the first of its sector's symbols, until it is promoted. Its genome
  must lie within the SESA policy's bounds.
* DISABLE_STRATEGY disables a strategy (its weight goes to 0).
* REWEIGHT_STRATEGIES sets the weights of the strategies it names, which must be enabled and in
  production (a weight of 0 for any other is accepted and changes nothing, so a reweighting
  executed beside the disables it anticipated still applies); the others keep theirs.
* PROMOTE_STRATEGY moves a shadow to production, enabled, at the mean weight of its sector's
  enabled production strategies. A strategy that never traded as a shadow cannot be promoted.

Weights as listed are normalised to sum to 1 over the enabled production strategies. The fleet
itself only changes through the actions the market executes (ADJUST_EXPOSURE,
SPAWN_ARB_MISSION): it keeps trading a strategy the book disabled, and does not trade one the
book promoted. The book is the officer's decision record, not yet an instruction to the fleet.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from market.fleet import FleetReport
from qtmesh.base.bars import format_time
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, StrategyStage

FLEET = "fleet"
ACTION = "action"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """One strategy as the book holds it; ``raw_weight`` before normalisation."""

    strategy_id: str
    sector: str
    symbol: str
    genome: StrategyGenome
    stage: StrategyStage
    enabled: bool
    raw_weight: float
    since: int  # market time the strategy entered its stage
    origin: str  # FLEET (deployed by the fleet) or ACTION (added by an action)

    def to_json(self) -> dict[str, Any]:
        g = self.genome
        return {
            "strategy_id": self.strategy_id,
            "sector": self.sector,
            "symbol": self.symbol,
            "genome": {
                "id": g.id,
                "family": g.family.name,
                "parameters": dict(g.parameters),
                "parent_ids": list(g.parent_ids),
                "generation": g.generation,
                "origin": g.origin,
            },
            "stage": self.stage.name,
            "enabled": self.enabled,
            "raw_weight": self.raw_weight,
            "since": self.since,
            "origin": self.origin,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        g = data["genome"]
        genome = StrategyGenome(
            id=g["id"],
            family=StrategyFamily[g["family"]],
            parameters=g["parameters"],
            parent_ids=tuple(g["parent_ids"]),
            generation=g["generation"],
            origin=g["origin"],
        )
        return cls(
            **{**data, "genome": genome, "stage": StrategyStage[data["stage"]]},
        )


@dataclasses.dataclass(frozen=True)
class Universe:
    """The fleet's deployment: its strategies as book records, and each sector's symbols."""

    base: Mapping[str, Record]
    sector_symbols: Mapping[str, tuple[str, ...]]

    @classmethod
    def of_fleet(cls, fleet: FleetReport) -> Universe:
        total = sum(s.weight for s in fleet.strategies)
        base = {
            s.strategy.id: Record(
                strategy_id=s.strategy.id,
                sector=s.strategy.sector,
                symbol=s.strategy.symbol,
                genome=s.strategy.genome,
                stage=StrategyStage.PRODUCTION,
                enabled=True,
                raw_weight=s.weight / total if total > 0 else 0.0,
                since=fleet.deployment_time,
                origin=FLEET,
            )
            for s in fleet.strategies
        }
        symbols: dict[str, set[str]] = {b.sector: set() for b in fleet.sectors}
        for s in fleet.strategies:
            symbols.setdefault(s.strategy.sector, set()).add(s.strategy.symbol)
        return cls(
            MappingProxyType(base),
            MappingProxyType({k: tuple(sorted(v)) for k, v in sorted(symbols.items())}),
        )

    def test_symbol(self, strategy_id: str, sector: str, *, field: str = "sector") -> str:
        """The symbol a new strategy trades: the one its id names, else its sector's first."""
        named = strategy_id.partition("/")[0]
        symbols = self.sector_symbols[sector]
        if not symbols:
            raise FailedPrecondition(
                f"{field}: sector {sector!r} has no deployed strategy, so no symbol to test on",
                metadata={"field": field},
            )
        return named if "/" in strategy_id and named in symbols else symbols[0]


@dataclasses.dataclass(frozen=True)
class Entry:
    """A strategy of the book with its normalised weight."""

    record: Record
    weight: float

    @property
    def strategy_id(self) -> str:
        return self.record.strategy_id

    @property
    def in_fleet(self) -> bool:
        return self.record.origin == FLEET

    @property
    def producing(self) -> bool:
        """Enabled and in production: the strategies that carry weight."""
        return self.record.enabled and self.record.stage is StrategyStage.PRODUCTION


@dataclasses.dataclass(frozen=True)
class BookPolicy:
    """The records actions have written (persisted); the rest of the book is the fleet's."""

    records: Mapping[str, Record] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", MappingProxyType(dict(self.records)))

    def merged(self, universe: Universe) -> dict[str, Record]:
        """Every strategy: the fleet's, overlaid by the records (records of strategies the fleet
        no longer deploys are dropped)."""
        merged = dict(universe.base)
        for sid, record in self.records.items():
            if record.origin == ACTION or sid in universe.base:
                merged[sid] = record
        return merged

    def entries(self, universe: Universe) -> list[Entry]:
        """The book ordered by (sector, id), weights normalised over producing strategies."""
        records = sorted(self.merged(universe).values(), key=lambda r: (r.sector, r.strategy_id))

        def producing(r: Record) -> bool:
            return r.enabled and r.stage is StrategyStage.PRODUCTION

        total = sum(r.raw_weight for r in records if producing(r))
        return [
            Entry(r, r.raw_weight / total if producing(r) and total > 0 else 0.0) for r in records
        ]

    def _with(self, *records: Record) -> BookPolicy:
        return BookPolicy({**self.records, **{r.strategy_id: r for r in records}})

    def _known(self, universe: Universe, strategy_id: str, field: str) -> Record:
        record = self.merged(universe).get(strategy_id)
        if record is None:
            raise InvalidArgument(field, f"unknown strategy {strategy_id!r}")
        return record

    # -- changes: each returns the new policy and what changed, or raises ----------------------

    def enable(
        self,
        universe: Universe,
        *,
        strategy_id: str,
        sector: str,
        genome: StrategyGenome | None,
        weight: float,
        at: int,
        field: str,
    ) -> tuple[BookPolicy, str]:
        if not (math.isfinite(weight) and weight >= 0):
            raise InvalidArgument(f"{field}.weight", f"{weight} is not a weight >= 0")
        record = self.merged(universe).get(strategy_id)
        if record is not None:
            if record.enabled and weight == 0:
                return self, f"{strategy_id} is already enabled"
            changed = dataclasses.replace(
                record, enabled=True, raw_weight=weight or record.raw_weight
            )
            return self._with(changed), f"{strategy_id} enabled ({record.stage.name.lower()})"
        if genome is None:
            raise InvalidArgument(
                f"{field}.genome", f"is needed to add {strategy_id!r} to the book"
            )
        if sector not in universe.sector_symbols:
            known = ", ".join(universe.sector_symbols)
            raise InvalidArgument(f"{field}.sector", f"unknown sector {sector!r} (known: {known})")
        genome = Policy().validate(genome, field=f"{field}.genome")
        symbol = universe.test_symbol(strategy_id, sector, field=f"{field}.sector")
        added = Record(
            strategy_id=strategy_id,
            sector=sector,
            symbol=symbol,
            genome=genome,
            stage=StrategyStage.SHADOW,
            enabled=True,
            raw_weight=weight,
            since=at,
            origin=ACTION,
        )
        return self._with(added), (
            f"{strategy_id} ({genome.family.name.lower()}) added as a shadow on {symbol} from "
            f"{format_time(at)}: it trades on paper until promoted"
        )

    def disable(
        self, universe: Universe, *, strategy_id: str, field: str
    ) -> tuple[BookPolicy, str]:
        record = self._known(universe, strategy_id, f"{field}.strategy_id")
        if not record.enabled:
            return self, f"{strategy_id} is already disabled"
        return self._with(dataclasses.replace(record, enabled=False)), f"{strategy_id} disabled"

    def reweight(
        self, universe: Universe, *, weights: Mapping[str, float], field: str
    ) -> tuple[BookPolicy, str]:
        if not weights:
            raise InvalidArgument(f"{field}.weights", "must name at least one strategy")
        merged = self.merged(universe)
        changed = []
        for sid, weight in sorted(weights.items()):
            where = f"{field}.weights[{sid}]"
            record = merged.get(sid)
            if record is None:
                raise InvalidArgument(where, f"unknown strategy {sid!r}")
            if not (math.isfinite(weight) and weight >= 0):
                raise InvalidArgument(where, f"{weight} is not a weight >= 0")
            if not (record.enabled and record.stage is StrategyStage.PRODUCTION):
                if weight == 0:
                    continue  # carries no weight already (e.g. disabled by a concurrent action)
                raise InvalidArgument(
                    where,
                    "only enabled production strategies carry weight (shadows trade on paper)",
                )
            changed.append(dataclasses.replace(record, raw_weight=weight))
        policy = self._with(*changed)
        if sum(e.weight for e in policy.entries(universe)) <= 0:
            raise InvalidArgument(f"{field}.weights", "would leave no strategy any weight")
        before = {e.strategy_id: e.weight for e in self.entries(universe)}
        after = {e.strategy_id: e.weight for e in policy.entries(universe)}
        moved = 0.5 * sum(abs(after[k] - before.get(k, 0.0)) for k in after)
        return policy, f"{len(changed)} strategies reweighted, {moved:.1%} of the weight moved"

    def promote(
        self, universe: Universe, *, strategy_id: str, at: int, field: str
    ) -> tuple[BookPolicy, str]:
        record = self.merged(universe).get(strategy_id)
        if record is None:
            raise FailedPrecondition(
                f"{strategy_id} is not in the strategy book: enable it as a shadow first; the "
                "meta policy promotes shadows after their test period"
            )
        if record.stage is StrategyStage.PRODUCTION:
            return self, f"{strategy_id} is already in production"
        peers = [
            e.record.raw_weight
            for e in self.entries(universe)
            if e.producing and e.record.sector == record.sector
        ] or [e.record.raw_weight for e in self.entries(universe) if e.producing]
        weight = sum(peers) / len(peers) if peers else 1.0
        promoted = dataclasses.replace(
            record, stage=StrategyStage.PRODUCTION, enabled=True, raw_weight=weight, since=at
        )
        return self._with(promoted), f"{strategy_id} promoted to production on {record.symbol}"

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_json() for _, r in sorted(self.records.items())]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BookPolicy:
        return cls({r["strategy_id"]: Record.from_json(r) for r in data["records"]})
