"""The risk report: tail risk of the portfolio and each sector, exposures, drawdowns, and every
limit they break.

Inputs come from the paper fleet (see :mod:`agents.fleet_history`: returns per period, one hour
by default, so every VaR and CVaR is over that horizon) or from the caller. From the fleet:

* portfolio returns: fleet equity returns per period; sector returns: each sector's strategies;
* a sector's exposure: its gross exposure now (allocation x mean |position| of its strategies);
  portfolio gross exposure: the sectors' plus both legs of every open arb-mission;
* drawdown: fleet equity now below its highest period-end value in the lookback; a sector's:
  its compounded period returns below their peak.

From the caller (AssessRisk with returns): per sector a return series and an exposure; all series
have the same length and the portfolio return is sum_s exposure_s r_s(t); drawdowns are those
of the compounded series.

Limits broken (strictly above the threshold): ``max_var_95`` (portfolio historical VaR95),
``max_drawdown``, ``max_gross_exposure``, ``sector_exposure/<s>`` (the sector's limit), and
``sector_var_95/<s>``: a sector's standalone VaR95 in equity terms (allocation x its historical
VaR95) above its budget, ``sector_var_share`` x ``max_var_95``. VaR-based limits are checked
only with at least ``min_observations`` returns; with fewer, tail figures are reported as 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from agents.fleet_history import FleetHistory
from agents.risk.limits import PORTFOLIO, Halt, RiskPolicy, check_sector
from agents.risk.measures import TailRisk, check_series, drawdown, tail_risk
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.contract import RiskLimits
from qtmesh.base.errors import InvalidArgument

MAX_EXPOSURE = 10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RiskSettings:
    """How the officer reads the numbers (see :mod:`agents.risk.advice` for the last three)."""

    min_observations: int = 20
    sector_var_share: float = 0.5
    halt_margin: float = 0.25
    min_factor: float = 0.25


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class RiskInputs:
    """Returns (n periods) and the positions at the end of them."""

    portfolio: np.ndarray  # (n,)
    sectors: tuple[str, ...]
    sector_returns: np.ndarray  # (n, K)
    allocations: tuple[float, ...]
    exposures: tuple[float, ...]  # gross, per sector
    gross_exposure: float
    drawdown: float
    sector_drawdowns: tuple[float, ...]
    as_of_time: int = 0
    horizon: int = 0  # nanoseconds per observation; 0: the caller's period
    market_position: int = 0

    @classmethod
    def of_fleet(cls, history: FleetHistory, lookback: int) -> RiskInputs:
        recent = history.last(lookback)
        current = history.current
        missions = sum(2 * m.mission.allocation for m in current.missions if m.active)
        exposures = tuple(s.gross_exposure for s in current.sectors)
        sector_dd = recent.sector_drawdowns()
        return cls(
            portfolio=recent.portfolio,
            sectors=recent.sectors,
            sector_returns=recent.sector_returns,
            allocations=tuple(s.allocation for s in current.sectors),
            exposures=exposures,
            gross_exposure=float(sum(exposures) + missions),
            drawdown=recent.drawdown(),
            sector_drawdowns=tuple(sector_dd[s] for s in recent.sectors),
            as_of_time=current.clock_time,
            horizon=history.period,
            market_position=current.position,
        )

    @classmethod
    def of_returns(cls, series: Mapping[str, tuple[np.ndarray, float]]) -> RiskInputs:
        """From validated sector series of equal length and their exposures."""
        sectors = tuple(sorted(series))
        returns = np.column_stack([series[s][0] for s in sectors])
        exposures = tuple(float(series[s][1]) for s in sectors)
        portfolio = returns @ np.array(exposures)
        return cls(
            portfolio=portfolio,
            sectors=sectors,
            sector_returns=returns,
            allocations=exposures,
            exposures=exposures,
            gross_exposure=float(sum(exposures)),
            drawdown=drawdown(portfolio),
            sector_drawdowns=tuple(drawdown(returns[:, k]) for k in range(len(sectors))),
        )


@dataclasses.dataclass(frozen=True)
class SectorRisk:
    sector: str
    tail: TailRisk
    exposure: float
    exposure_limit: float
    drawdown: float
    allocation: float
    equity_var_95: float
    var_budget: float


@dataclasses.dataclass(frozen=True)
class Breach:
    limit: str  # e.g. "max_drawdown" or "sector_exposure/Crypto"
    value: float
    threshold: float
    scope: str  # PORTFOLIO or the sector

    @property
    def excess(self) -> float:
        """How far over the threshold, relative to it (0.25: 25% over)."""
        return self.value / self.threshold - 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class RiskReport:
    as_of_time: int
    portfolio: TailRisk
    sectors: tuple[SectorRisk, ...]
    gross_exposure: float
    drawdown: float
    limits: RiskLimits
    breaches: tuple[Breach, ...]
    halts: tuple[Halt, ...]
    observations: int
    horizon: int
    market_position: int
    # The returns tail figures needed when assessed (not carried over gRPC).
    min_observations: int = 2

    @property
    def trading_halted(self) -> bool:
        return any(h.scope == PORTFOLIO for h in self.halts)

    @property
    def tail_measured(self) -> bool:
        """Whether there were enough returns for tail figures; an all-zero tail of a flat fleet
        is measured too."""
        return self.observations >= max(self.min_observations, 2)


def caller_inputs(
    series: Mapping[str, tuple[Sequence[float], float]],
    *,
    sectors: Collection[str] | None,
    minimum: int,
    maximum: int,
    max_sectors: int,
) -> RiskInputs:
    """Inputs from a caller's ``sector -> (returns, exposure)``, validated: known sectors, series
    of ``minimum``..``maximum`` finite returns above -100%, all of one length, exposures in
    0..10. Bad values are InvalidArgument naming ``sector_returns[<sector>]...``."""
    if len(series) > max_sectors:
        raise InvalidArgument("sector_returns", f"{len(series)} sectors; at most {max_sectors}")
    checked: dict[str, tuple[np.ndarray, float]] = {}
    for sector, (returns, exposure) in sorted(series.items()):
        field = f"sector_returns[{sector}]"
        check_sector(sector, sectors, field=field)
        r = check_series(
            np.asarray(returns, dtype=float),
            field=f"{field}.returns",
            minimum=minimum,
            maximum=maximum,
        )
        if not (math.isfinite(exposure) and 0 <= exposure <= MAX_EXPOSURE):
            raise InvalidArgument(f"{field}.exposure", f"{exposure} is not in 0..{MAX_EXPOSURE:g}")
        first = next(iter(checked.items()), None)
        if first is not None and first[1][0].shape[0] != r.shape[0]:
            raise InvalidArgument(
                f"{field}.returns",
                f"has {r.shape[0]} returns but sector_returns[{first[0]}] has "
                f"{first[1][0].shape[0]}: every series must cover the same periods",
            )
        checked[sector] = (r, exposure)
    return RiskInputs.of_returns(checked)


def assess(
    inputs: RiskInputs,
    policy: RiskPolicy,
    settings: RiskSettings,
    *,
    halts: tuple[Halt, ...] = (),
    token: CancelToken | None = None,
) -> RiskReport:
    """The report of ``inputs`` under ``policy``'s limits with the fleet's ``halts``; ``token``
    is polled per sector."""
    limits = policy.limits
    n = inputs.portfolio.shape[0]
    measured = n >= max(settings.min_observations, 2)
    portfolio = tail_risk(inputs.portfolio) if measured else TailRisk()
    budget = settings.sector_var_share * limits.max_var_95
    breaches = []
    if measured and portfolio.historical_var_95 > limits.max_var_95:
        breaches.append(
            Breach("max_var_95", portfolio.historical_var_95, limits.max_var_95, PORTFOLIO)
        )
    if inputs.drawdown > limits.max_drawdown:
        breaches.append(Breach("max_drawdown", inputs.drawdown, limits.max_drawdown, PORTFOLIO))
    if inputs.gross_exposure > limits.max_gross_exposure:
        breaches.append(
            Breach(
                "max_gross_exposure", inputs.gross_exposure, limits.max_gross_exposure, PORTFOLIO
            )
        )
    sectors = []
    for k, sector in enumerate(inputs.sectors):
        if token is not None:
            token.raise_if_cancelled()
        tail = tail_risk(inputs.sector_returns[:, k]) if measured else TailRisk()
        equity_var = inputs.allocations[k] * tail.historical_var_95
        risk = SectorRisk(
            sector=sector,
            tail=tail,
            exposure=inputs.exposures[k],
            exposure_limit=policy.sector_limit(sector),
            drawdown=inputs.sector_drawdowns[k],
            allocation=inputs.allocations[k],
            equity_var_95=equity_var,
            var_budget=budget,
        )
        sectors.append(risk)
        if risk.exposure > risk.exposure_limit:
            breaches.append(
                Breach(f"sector_exposure/{sector}", risk.exposure, risk.exposure_limit, sector)
            )
        if measured and equity_var > budget:
            breaches.append(Breach(f"sector_var_95/{sector}", equity_var, budget, sector))
    return RiskReport(
        as_of_time=inputs.as_of_time,
        portfolio=portfolio,
        sectors=tuple(sectors),
        gross_exposure=inputs.gross_exposure,
        drawdown=inputs.drawdown,
        limits=limits,
        breaches=tuple(breaches),
        halts=halts,
        observations=n,
        horizon=inputs.horizon,
        market_position=inputs.market_position,
        min_observations=settings.min_observations,
    )
