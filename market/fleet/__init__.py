"""The paper fleet: strategies deployed per sector trade the replay under the backtest engine's
fill model; their P&L, positions and trades, and the allocations that only executed actions
change.

Modules, each importing only those listed before it: :mod:`~market.fleet.setup` (what is
deployed, and its limits), :mod:`~market.fleet.book` (the strategy book the fleet trades),
:mod:`~market.fleet.state` (the allocations and the changes executed
actions make), :mod:`~market.fleet.report` (the value types reported),
:mod:`~market.fleet.simulation` (the backtests and the accounting below),
:mod:`~market.fleet.store` (persistence of the changes), :mod:`~market.fleet.engine` (the fleet
in the running market) and :mod:`~market.fleet.agent` (the fleet as an executor of the
federation). None imports gRPC or protobuf: the market's service and its conversions do.

Accounting (fractions of fleet equity; per-bar returns run from the previous close to the close):

* **Deployment.** The fleet trades the bars after ``deployment_time`` (the replay clock when it
  was first deployed). Each strategy is backtested by :mod:`backtest`'s kernel (signal at the
  close, fill at the next open, commission and slippage in basis points, ATR stops) on its
  symbol's bars from ``warmup_bars`` before the deployment up to the clock, without walk-forward
  folds. Positions held at the deployment are taken over as they stand.
* **Sectors.** Sector s holds allocation w_s. Its capital is split among its producing
  (enabled, production) strategies in proportion to their book weights v_i and rebalanced every
  bar, so its per-bar return is r_s(t) = sum_i v_i r_i(t) / sum_i v_i and each strategy trades
  w_s v_i / sum_i v_i of equity. The rest of equity is cash, earning nothing.
* **The book.** Only strategies the book has producing carry capital; a shadow paper-trades
  its own record with none (see :mod:`market.fleet.book`). A strategy that stops (disabled,
  replaced or halted) holds its position from the previous close to the next open, where it is
  flattened at the fill cost; one that starts (added, enabled, promoted or resumed) enters at
  the next open at the fill cost, at the position its signal holds then.
* **Halts.** A halted sector trades nothing (its strategies flat from the next open, an
  arb-mission with a leg in it closed at the close of the halt's bar) while its nominal
  allocation is kept for the resume.
* **Changes.** An executed action changes allocations, the book or the halts from the first
  bar after the market time of its execution; a change never takes effect before an earlier
  one.
* **Arb-missions.** Allocation a on each leg: long the equal-weighted basket of one sector's
  symbols, short the other's. The legs fill at the open of the first bar after the action and
  close at the close of the last bar within the mission's duration; each fill costs commission
  and slippage on both legs. The exit's costs are booked on the first bar at or after the
  mission's close time: the last bar of the mission when one falls on the close time, else
  the next bar (outside the mission, which earns no spread on it). Only then is the exit
  known to have happened, so no bar already reported is restated.
* **Equity.** E(t) = E(t-1) * (1 + sum_s w_s(t) r_s(t) + sum_m m(t)), m(t) being a mission's
  spread return times a, less its costs. Sector, strategy and mission P&L are E(t-1) times their
  term, so together they add up to the change of equity.
* **Trades.** A trade is a run of one non-zero position held at bar closes. Every bar's return
  belongs to exactly one trade (or to none, when flat): a bar in which the position reverses
  belongs to the trade it closes. An entry stopped out within its first bar leaves no position
  at any close and is not listed.
"""

from market.fleet.agent import EXECUTES, FleetAgent
from market.fleet.book import BookEntry, Candidate
from market.fleet.engine import FleetEngine
from market.fleet.report import (
    ClosedTrades,
    EquitySample,
    FleetReport,
    MissionBook,
    SectorBook,
    SectorMark,
    StageRecord,
    StrategyBook,
    Trade,
    TradeQuery,
)
from market.fleet.setup import (
    DAY_NANOS,
    DEFAULT_FAMILIES,
    DeployedStrategy,
    FleetLimits,
    FleetSetup,
    deploy,
)
from market.fleet.simulation import Backtester, FleetRun, simulate
from market.fleet.state import ArbMission, Cause, FleetChange, FleetState
from market.fleet.store import FleetStore

__all__ = [
    "DAY_NANOS",
    "DEFAULT_FAMILIES",
    "EXECUTES",
    "ArbMission",
    "Backtester",
    "BookEntry",
    "Candidate",
    "Cause",
    "ClosedTrades",
    "DeployedStrategy",
    "EquitySample",
    "FleetAgent",
    "FleetChange",
    "FleetEngine",
    "FleetLimits",
    "FleetReport",
    "FleetRun",
    "FleetSetup",
    "FleetState",
    "FleetStore",
    "MissionBook",
    "SectorBook",
    "SectorMark",
    "StageRecord",
    "StrategyBook",
    "Trade",
    "TradeQuery",
    "deploy",
    "simulate",
]
