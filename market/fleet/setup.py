"""What is deployed: the strategies of each sector, their starting allocations, the costs of
their fills and the limits every executed action is held to. :func:`deploy` builds the default
fleet, and a setup's fingerprint identifies its deployment across restarts. Plain values: nothing
here simulates, stores or serves."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from backtest.evaluation import CostModel
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome

DAY_NANOS = 86_400 * 10**9
DEFAULT_FAMILIES = (
    StrategyFamily.MA_CROSSOVER,
    StrategyFamily.MEAN_REVERSION,
    StrategyFamily.BREAKOUT,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetLimits:
    """Bounds every executed action is held to; a change beyond them is clipped to them."""

    # No sector may hold more than this fraction of equity.
    max_sector_allocation: float = 0.5
    # Sector allocations plus the legs of active arb-missions (counted once) stay within this.
    max_total_allocation: float = 1.5
    max_arb_allocation: float = 0.25
    # AdjustExposure factors above this are refused as a likely mistake.
    max_factor: float = 5.0
    arb_mission_nanos: int = 5 * DAY_NANOS


@dataclasses.dataclass(frozen=True)
class DeployedStrategy:
    id: str
    sector: str
    symbol: str
    genome: StrategyGenome


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetSetup:
    """What is deployed: strategies by sector, starting allocations, costs and limits."""

    strategies: tuple[DeployedStrategy, ...]
    sectors: tuple[str, ...]
    sector_symbols: Mapping[str, tuple[str, ...]]
    initial_allocations: Mapping[str, float]
    deployment_time: int
    capital: float = 1_000_000.0
    costs: CostModel = dataclasses.field(default_factory=CostModel)
    warmup_bars: int = 2880
    limits: FleetLimits = dataclasses.field(default_factory=FleetLimits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_allocations", _frozen(self.initial_allocations))
        object.__setattr__(self, "sector_symbols", MappingProxyType(dict(self.sector_symbols)))

    def fingerprint(self) -> str:
        """Identifies the deployment: the same data and settings after a restart give the same
        fingerprint, so the stored changes of that deployment apply again."""
        content = {
            "strategies": [
                [s.id, s.sector, s.symbol, s.genome.family.name, dict(s.genome.parameters)]
                for s in self.strategies
            ],
            "allocations": dict(sorted(self.initial_allocations.items())),
            "deployment_time": self.deployment_time,
            "capital": self.capital,
            "costs": [self.costs.commission_bps, self.costs.slippage_bps],
            "warmup_bars": self.warmup_bars,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def strategies_of(self, sector: str) -> list[int]:
        return [i for i, s in enumerate(self.strategies) if s.sector == sector]

    def check_sector(self, sector: str, *, field: str) -> str:
        if sector not in self.initial_allocations:
            raise InvalidArgument(
                field, f"unknown sector {sector!r}; known: {', '.join(self.sectors)}"
            )
        return sector


def deploy(
    symbols: Mapping[str, str],
    *,
    deployment_time: int,
    families: Sequence[StrategyFamily] = DEFAULT_FAMILIES,
    allocations: Mapping[str, float] | None = None,
    policy: Policy | None = None,
    capital: float = 1_000_000.0,
    costs: CostModel | None = None,
    warmup_bars: int = 2880,
    limits: FleetLimits | None = None,
) -> FleetSetup:
    """The default fleet: each family's default genome on every symbol (``symbols`` maps symbol
    to sector). Sectors missing from ``allocations`` share what the listed ones leave of 1.0."""
    policy = policy or Policy()
    limits = limits or FleetLimits()
    sectors = tuple(sorted(set(symbols.values())))
    given = dict(allocations or {})
    for sector, value in given.items():
        if sector not in sectors:
            raise InvalidArgument("fleet_allocations", f"unknown sector {sector!r}")
        if not (math.isfinite(value) and 0 <= value <= limits.max_sector_allocation):
            raise InvalidArgument(
                f"fleet_allocations[{sector}]",
                f"{value} is not in 0..{limits.max_sector_allocation} (max_sector_allocation)",
            )
    rest = [s for s in sectors if s not in given]
    share = max(0.0, 1.0 - sum(given.values())) / len(rest) if rest else 0.0
    initial = {s: given.get(s, min(share, limits.max_sector_allocation)) for s in sectors}
    if sum(initial.values()) > limits.max_total_allocation + 1e-12:
        raise InvalidArgument(
            "fleet_allocations",
            f"total {sum(initial.values()):.4g} exceeds max_total_allocation "
            f"{limits.max_total_allocation}",
        )
    genomes = [policy.default_genome(f) for f in families]
    strategies = tuple(
        DeployedStrategy(f"{symbol}/{g.id}", sector, symbol, g)
        for symbol, sector in sorted(symbols.items(), key=lambda item: (item[1], item[0]))
        for g in genomes
    )
    by_sector: dict[str, list[str]] = {}
    for symbol, sector in sorted(symbols.items()):
        by_sector.setdefault(sector, []).append(symbol)
    return FleetSetup(
        strategies=strategies,
        sectors=sectors,
        sector_symbols={s: tuple(v) for s, v in by_sector.items()},
        initial_allocations=initial,
        deployment_time=deployment_time,
        capital=capital,
        costs=costs or CostModel(),
        warmup_bars=warmup_bars,
        limits=limits,
    )


def _frozen(values: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType({k: float(v) for k, v in sorted(values.items())})
