"""The strategy book the fleet trades: which strategies are enabled, at what weight, and at which
stage. The market's fleet is its one owner; the strategy officer reads it and recommends.

The book starts from the deployment: every deployed strategy is in production, enabled, at
weight 1. Only executed actions change it, each from the first bar after its execution:

* ENABLE_STRATEGY of a strategy in the book enables it (at the weight given, if any); of a new
  strategy, with its genome and a known sector, adds it as a **shadow**: it trades on paper with
  no capital, on the symbol its id names (``SYMBOL/...``) or else its sector's first symbol. Its
  genome must lie within the SESA policy's bounds.
* An evolution's candidates join as shadows the same way (:func:`add_shadows`), with the
  evolution as their origin and its trial count, so their deflated Sharpe counts every genome
  the evolution tried.
* DISABLE_STRATEGY disables (retires) a strategy: it is flat from the next open.
* REWEIGHT_STRATEGIES sets the weights of the strategies it names, which must be enabled and in
  production (a weight of 0 for any other is accepted and changes nothing, so a reweighting
  executed beside the disables it anticipated still applies).
* PROMOTE_STRATEGY moves a shadow to production, enabled, at the mean weight of its sector's
  producing strategies, or, with ``replaces``, at the weight of the strategy it replaces, which
  is disabled by the same change.

Weights are relative within a sector: the sector's allocation (ADJUST_EXPOSURE's lever) is split
among its producing (enabled, production) strategies in proportion to their weights. Moving
capital between sectors is not the book's job.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from market.fleet.setup import FleetSetup
from qtmesh.base.bars import format_time
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyGenome, StrategyStage

DEPLOYMENT = "deployment"
ACTION = "action"
EVOLUTION = "evolution/"  # origin of an evolution's candidates: "evolution/<evolution id>"

Book = Mapping[str, "BookEntry"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BookEntry:
    """One strategy of the book."""

    strategy_id: str
    sector: str
    symbol: str
    genome: StrategyGenome
    stage: StrategyStage
    enabled: bool
    weight: float  # relative, within the sector
    since: int  # market time it entered its stage
    origin: str  # DEPLOYMENT, ACTION or EVOLUTION + id
    trials: int = 1  # genomes tried to find it, for its deflated Sharpe

    @property
    def producing(self) -> bool:
        """Enabled and in production: the strategies that carry capital."""
        return self.enabled and self.stage is StrategyStage.PRODUCTION

    @property
    def shadowing(self) -> bool:
        return self.enabled and self.stage is StrategyStage.SHADOW


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A strategy an evolution selected, to be tested as a shadow."""

    strategy_id: str
    sector: str
    genome: StrategyGenome


def initial_book(setup: FleetSetup) -> dict[str, BookEntry]:
    return {
        s.id: BookEntry(
            strategy_id=s.id,
            sector=s.sector,
            symbol=s.symbol,
            genome=s.genome,
            stage=StrategyStage.PRODUCTION,
            enabled=True,
            weight=1.0,
            since=setup.deployment_time,
            origin=DEPLOYMENT,
        )
        for s in setup.strategies
    }


def producing_weights(
    book: Book, setup: FleetSetup, allocations: Mapping[str, float]
) -> dict[str, float]:
    """Fraction of equity each producing strategy trades: its sector's allocation split in
    proportion to the weights of the sector's producing strategies."""
    totals: dict[str, float] = {}
    for e in book.values():
        if e.producing:
            totals[e.sector] = totals.get(e.sector, 0.0) + e.weight
    return {
        sid: allocations.get(e.sector, 0.0) * e.weight / totals[e.sector]
        for sid, e in book.items()
        if e.producing and totals[e.sector] > 0
    }


def _symbol_for(setup: FleetSetup, strategy_id: str, sector: str, field: str) -> str:
    named = strategy_id.partition("/")[0]
    symbols = setup.sector_symbols.get(sector, ())
    if not symbols:
        raise FailedPrecondition(
            f"{field}: sector {sector!r} has no symbol to trade on", metadata={"field": field}
        )
    return named if "/" in strategy_id and named in symbols else symbols[0]


def _known(book: Book, strategy_id: str, field: str) -> BookEntry:
    entry = book.get(strategy_id)
    if entry is None:
        raise InvalidArgument(field, f"unknown strategy {strategy_id!r}")
    return entry


# -- changes: each returns the entries it changes and what it did, or raises --------------------


def enable(
    book: Book,
    setup: FleetSetup,
    *,
    strategy_id: str,
    sector: str,
    genome: StrategyGenome | None,
    weight: float,
    at: int,
    field: str,
    origin: str = ACTION,
    trials: int = 1,
) -> tuple[list[BookEntry], str]:
    if not (math.isfinite(weight) and weight >= 0):
        raise InvalidArgument(f"{field}.weight", f"{weight} is not a weight >= 0")
    if not strategy_id:
        raise InvalidArgument(f"{field}.strategy_id", "must not be empty")
    entry = book.get(strategy_id)
    if entry is not None:
        if entry.enabled and (weight == 0 or weight == entry.weight):
            return [], f"{strategy_id} is already enabled"
        changed = dataclasses.replace(entry, enabled=True, weight=weight or entry.weight)
        return [changed], f"{strategy_id} enabled ({entry.stage.name.lower()})"
    if genome is None:
        raise InvalidArgument(f"{field}.genome", f"is needed to add {strategy_id!r} to the book")
    setup.check_sector(sector, field=f"{field}.sector")
    genome = Policy().validate(genome, field=f"{field}.genome")
    symbol = _symbol_for(setup, strategy_id, sector, f"{field}.sector")
    added = BookEntry(
        strategy_id=strategy_id,
        sector=sector,
        symbol=symbol,
        genome=genome,
        stage=StrategyStage.SHADOW,
        enabled=True,
        weight=weight or 1.0,
        since=at,
        origin=origin,
        trials=max(1, trials),
    )
    return [added], (
        f"{strategy_id} ({genome.family.name.lower()}) added as a shadow on {symbol} from "
        f"{format_time(at)}"
    )


def add_shadows(
    book: Book,
    setup: FleetSetup,
    candidates: Sequence[Candidate],
    *,
    evolution_id: str,
    trials: int,
    at: int,
    field: str,
) -> tuple[list[BookEntry], str]:
    """An evolution's candidates as shadows; those already in the book are left as they are."""
    if not evolution_id:
        raise InvalidArgument(f"{field}.evolution_id", "must be set")
    added: list[BookEntry] = []
    for i, c in enumerate(candidates):
        if c.strategy_id in book or any(a.strategy_id == c.strategy_id for a in added):
            continue
        entries, _ = enable(
            book,
            setup,
            strategy_id=c.strategy_id,
            sector=c.sector,
            genome=c.genome,
            weight=0.0,
            at=at,
            field=f"{field}.candidates[{i}]",
            origin=EVOLUTION + evolution_id,
            trials=trials,
        )
        added += entries
    names = ", ".join(e.strategy_id for e in added) or "none new"
    return added, f"evolution {evolution_id}: {len(added)} shadows added ({names})"


def disable(book: Book, *, strategy_id: str, field: str) -> tuple[list[BookEntry], str]:
    entry = _known(book, strategy_id, f"{field}.strategy_id")
    if not entry.enabled:
        return [], f"{strategy_id} is already disabled"
    return [dataclasses.replace(entry, enabled=False)], f"{strategy_id} disabled"


def reweight(
    book: Book,
    setup: FleetSetup,
    allocations: Mapping[str, float],
    *,
    weights: Mapping[str, float],
    field: str,
) -> tuple[list[BookEntry], str]:
    if not weights:
        raise InvalidArgument(f"{field}.weights", "must name at least one strategy")
    changed = []
    for sid, weight in sorted(weights.items()):
        where = f"{field}.weights[{sid}]"
        entry = _known(book, sid, where)
        if not (math.isfinite(weight) and weight >= 0):
            raise InvalidArgument(where, f"{weight} is not a weight >= 0")
        if not entry.producing:
            if weight == 0:
                continue  # carries no weight already (e.g. disabled by a concurrent action)
            raise InvalidArgument(
                where, "only enabled production strategies carry weight (shadows trade on paper)"
            )
        changed.append(dataclasses.replace(entry, weight=weight))
    after = {**book, **{e.strategy_id: e for e in changed}}
    before_w = producing_weights(book, setup, allocations)
    after_w = producing_weights(after, setup, allocations)
    emptied = [
        sector
        for sector in setup.sectors
        if any(e.producing for e in book.values() if e.sector == sector)
        and sum(e.weight for e in after.values() if e.producing and e.sector == sector) <= 0
    ]
    if emptied:
        raise InvalidArgument(
            f"{field}.weights", f"would leave no strategy of {', '.join(emptied)} any weight"
        )
    total = sum(before_w.values()) or 1.0
    keys = after_w.keys() | before_w.keys()
    moved = 0.5 * sum(abs(after_w.get(k, 0.0) - before_w.get(k, 0.0)) for k in keys) / total
    return changed, f"{len(changed)} strategies reweighted, {moved:.1%} of the capital moved"


def promote(
    book: Book, *, strategy_id: str, replaces: str, at: int, field: str
) -> tuple[list[BookEntry], str]:
    entry = book.get(strategy_id)
    if entry is None:
        raise FailedPrecondition(
            f"{strategy_id} is not in the strategy book: it must be a shadow first (enabled, or "
            "from an evolution) and pass the promotion gates"
        )
    if entry.stage is StrategyStage.PRODUCTION:
        return [], f"{strategy_id} is already in production"
    changed: list[BookEntry] = []
    if replaces:
        old = _known(book, replaces, f"{field}.replaces")
        if not old.producing or replaces == strategy_id:
            raise InvalidArgument(
                f"{field}.replaces", f"{replaces} is not an enabled production strategy"
            )
        if old.sector != entry.sector:
            raise InvalidArgument(
                f"{field}.replaces",
                f"{replaces} trades {old.sector}, {strategy_id} trades {entry.sector}",
            )
        weight = old.weight
        changed.append(dataclasses.replace(old, enabled=False))
    else:
        peers = [e.weight for e in book.values() if e.producing and e.sector == entry.sector]
        weight = sum(peers) / len(peers) if peers else 1.0
    changed.insert(
        0,
        dataclasses.replace(
            entry, stage=StrategyStage.PRODUCTION, enabled=True, weight=weight, since=at
        ),
    )
    detail = f"{strategy_id} promoted to production on {entry.symbol}"
    if replaces:
        detail += f", replacing {replaces}"
    return changed, detail


def merged(book: Book, changes: Iterable[BookEntry]) -> dict[str, BookEntry]:
    return {**book, **{e.strategy_id: e for e in changes}}
