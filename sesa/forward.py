"""Forward evaluation on the world model's scenarios: where a SIMULATION evolution's paths come
from, and how the world model's paths become bars.

Rules:

* **The source.** A SIMULATION evolution on a market symbol's bars asks the world model's
  Simulate for ``scenario_paths`` regime-conditioned paths of as many bars as its window: blocks
  of the symbol's own history (the market's, up to the replay clock) drawn only from bars of the
  regime it is in now. SESA's own seasonal block bootstrap of the evolution's bars
  (:class:`sesa.scenarios.BlockBootstrap`) is the offline fallback, used when
  ``world_model_scenarios`` is off, when the bars were given inline (the world model knows the
  market's history, not theirs), or when the world model fails: unreachable, past its deadline
  (``world_model_timeout_seconds``), or refusing (a window longer than its ``max_horizon``, a
  current regime with no bar of history). A failure is logged as a warning. The evolution's
  started event names the source (``EvolutionStarted.scenarios``), the regime or why the
  bootstrap ran.
* **The calls.** Each call returns at most :data:`MAX_VALUES_PER_CALL` path values (the world
  model's default ``max_returned_values``, 8 MB of doubles), so more paths take several calls;
  call ``i`` is seeded from the evolution's seed and ``i``, so the same evolution on the same
  market state draws the same paths. Its mean block length is SESA's ``scenario_block_bars``.
* **The bars.** :func:`sesa.scenarios.series_from_log_returns` continues the evolution's bars:
  closes from the last close times ``exp(path)``, opens at the previous close, wicks and
  volumes from bars of the window at the same time of day, drawn from the evolution's own
  scenario stream (its seed and 1, as the bootstrap's), so they do not shift its other draws.

No gRPC here: the world model's client is passed in.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import structlog

from backtest.indicators import BarData
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument, MeshError
from sesa.scenarios import series_from_log_returns
from world_model.scenarios import ScenarioSummary

_log = structlog.get_logger("sesa.forward")

MAX_VALUES_PER_CALL = 1_000_000


class Simulator(Protocol):
    """What SESA asks the world model (implemented by WorldModelClient)."""

    async def simulate(
        self,
        *,
        symbol: str = "",
        sector: str = "",
        horizon: int,
        num_paths: int,
        block_size: int = 0,
        quantiles: Sequence[float] = (),
        seed: int = 0,
        regime_conditioned: bool = False,
        include_paths: bool = False,
    ) -> ScenarioSummary: ...


class Origin(enum.Enum):
    """Where the paths come from (``ScenarioGenerator`` on the wire)."""

    WORLD_MODEL = 1
    BLOCK_BOOTSTRAP = 2


@dataclasses.dataclass(frozen=True)
class ScenarioSource:
    origin: Origin
    regime: str = ""  # WORLD_MODEL: the regime the paths were drawn from
    fallback_reason: str = ""  # BLOCK_BOOTSTRAP: why the world model's were not used


@dataclasses.dataclass(frozen=True, eq=False)
class Scenarios:
    """The source, and the world model's paths (num_paths x bars cumulative log returns; None:
    SESA bootstraps its own)."""

    source: ScenarioSource
    log_paths: np.ndarray | None = None


def bootstrap(reason: str) -> Scenarios:
    return Scenarios(ScenarioSource(Origin.BLOCK_BOOTSTRAP, fallback_reason=reason))


def call_seed(seed: int, call: int) -> int:
    """The world-model seed of call ``call`` of an evolution seeded ``seed`` (a uint64)."""
    return int(np.random.SeedSequence([seed, 2, call]).generate_state(1, np.uint64)[0])


async def draw_scenarios(
    world: Simulator,
    *,
    symbol: str,
    paths: int,
    bars: int,
    block_size: int,
    seed: int,
) -> Scenarios:
    """``paths`` regime-conditioned paths of ``bars`` bars of ``symbol`` from the world model;
    the bootstrap, with the reason, if it fails."""
    per_call = max(1, MAX_VALUES_PER_CALL // bars)
    drawn: list[np.ndarray] = []
    regime = ""
    try:
        for call, first in enumerate(range(0, paths, per_call)):
            summary = await world.simulate(
                symbol=symbol,
                horizon=bars,
                num_paths=min(per_call, paths - first),
                block_size=block_size,
                seed=call_seed(seed, call),
                regime_conditioned=True,
                include_paths=True,
            )
            expected = (min(per_call, paths - first), bars)
            if summary.paths is None or summary.paths.shape != expected:
                shape = None if summary.paths is None else summary.paths.shape
                raise InvalidArgument("paths", f"expected {expected} values, got {shape}")
            if not np.all(np.isfinite(summary.paths)):
                raise InvalidArgument("paths", "a path holds a value that is not a finite number")
            drawn.append(summary.paths)
            regime = regime or summary.regime
    except MeshError as exc:
        problem = f"{exc.code}: {exc.message}"
        _log.warning(
            "the world model's scenarios are unavailable; SESA's block bootstrap runs instead",
            symbol=symbol,
            error=problem,
        )
        return bootstrap(f"the world model failed ({problem})")
    return Scenarios(ScenarioSource(Origin.WORLD_MODEL, regime=regime), np.concatenate(drawn))


def world_model_bars(
    log_paths: np.ndarray, data: BarData, *, seed: int, token: CancelToken
) -> list[BarData]:
    """The world model's paths as bars continuing ``data`` (see the module's rules)."""
    rng = np.random.default_rng([seed, 1])
    out = []
    # One path at a time, so a cancel stops between paths.
    for row in log_paths:
        token.raise_if_cancelled()
        (series,) = series_from_log_returns(data.series, row[np.newaxis, :], rng=rng)
        out.append(BarData(series, bars_per_year=data.bars_per_year))
    return out
