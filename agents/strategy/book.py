"""The strategy book as the strategy officer sees it: the market's fleet owns the book (see
:mod:`market.fleet.book`) and trades it; the officer reads it with GetFleet and recommends the
actions that change it (ENABLE, DISABLE, REWEIGHT, PROMOTE), which the market executes.

Each strategy of the fleet's book becomes an :class:`Entry`: its record (sector, symbol, genome,
stage, enabled, book weight, the market time it entered its stage, its origin) and its weight,
its share of the capital the fleet's producing strategies trade (summing to 1 over them; all 0
while every sector is halted).
"""

from __future__ import annotations

import dataclasses

from market.fleet import FleetReport
from market.fleet.book import DEPLOYMENT
from qtmesh.base.genome import StrategyGenome, StrategyStage

FLEET = DEPLOYMENT  # deployed with the fleet
ACTION = "action"  # added by an action; an evolution's candidates name it ("evolution/<id>")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """One strategy as the fleet's book holds it; ``raw_weight`` is its book weight."""

    strategy_id: str
    sector: str
    symbol: str
    genome: StrategyGenome
    stage: StrategyStage
    enabled: bool
    raw_weight: float
    since: int  # market time the strategy entered its stage
    origin: str  # FLEET, ACTION or "evolution/<id>"
    trials: int = 1


@dataclasses.dataclass(frozen=True)
class Entry:
    """A strategy of the book with its share of the capital the fleet trades."""

    record: Record
    weight: float

    @property
    def strategy_id(self) -> str:
        return self.record.strategy_id

    @property
    def in_fleet(self) -> bool:
        """Deployed with the fleet (the others came from actions or evolutions)."""
        return self.record.origin == FLEET

    @property
    def producing(self) -> bool:
        """Enabled and in production: the strategies that carry capital."""
        return self.record.enabled and self.record.stage is StrategyStage.PRODUCTION


def entries_of(fleet: FleetReport) -> list[Entry]:
    """The fleet's book ordered by (sector, id)."""
    total = sum(s.weight for s in fleet.strategies)
    entries = [
        Entry(
            Record(
                strategy_id=s.strategy.id,
                sector=s.strategy.sector,
                symbol=s.strategy.symbol,
                genome=s.strategy.genome,
                stage=s.stage,
                enabled=s.enabled,
                raw_weight=s.book_weight,
                since=s.since,
                origin=s.origin,
                trials=s.trials,
            ),
            s.weight / total if total > 0 else 0.0,
        )
        for s in fleet.strategies
    ]
    return sorted(entries, key=lambda e: (e.record.sector, e.strategy_id))
