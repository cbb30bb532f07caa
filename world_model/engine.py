"""The world model as an agent: regime models of symbols, sectors and the whole market kept fresh
from the market, scenarios from them, and exposure recommendations read from the precomputed
models.

Fitting is the slow part (a fraction of a second per series), so models are cached per series
and lookback and refitted once the market has ``refit_bars`` new bars. Recommend never waits for
a fit: it reads the cached sector models and, if any may be stale, starts a background refresh.
Each recommendation carries the market time its model was fitted at (``as_of_time``, the time of
its last bar), so a cached model that could not be refitted shows its age to the federation.
DetectRegime and Simulate wait for a fresh model; concurrent callers share one fit, which runs
off the event loop and is cancelled when every caller waiting for it has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import structlog

from market.bar_cache import BarCache
from qtmesh.base.bars import BarSeries, SymbolInfo
from qtmesh.base.concurrency import run_cancellable
from qtmesh.base.contract import Action, AgentContext, ExecutionResult, Recommendation
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, MeshError
from world_model.config import WorldModelConfig
from world_model.policy import recommend_exposure
from world_model.regimes import RegimeModel, RegimeReport, fit_regimes
from world_model.scenarios import (
    DEFAULT_QUANTILES,
    ScenarioSummary,
    check_quantiles,
    simulate,
    simulate_terminal,
    terminal_quantiles,
)

T = TypeVar("T")
MAX_QUANTILES = 99
_log = structlog.get_logger("world_model")


class MarketData(Protocol):
    """What the world model reads from the market (implemented by MarketClient)."""

    async def list_symbols(self, sector: str = "") -> list[SymbolInfo]: ...

    async def bars(
        self, symbol: str, *, start_time: int | None = None, lookback: int = 0
    ) -> BarSeries: ...


@dataclasses.dataclass(frozen=True)
class Subject:
    """A symbol, a sector's equal-weighted index, or (``market``) the whole market's: the
    equal-weighted index of every symbol."""

    symbol: str = ""
    sector: str = ""
    market: bool = False

    def __post_init__(self) -> None:
        if self.market:
            if self.symbol or self.sector:
                field = "symbol" if self.symbol else "sector"
                raise InvalidArgument(field, "give a symbol, a sector or the market, not two")
        elif bool(self.symbol) == bool(self.sector):
            field = "symbol" if not self.symbol else "sector"
            raise InvalidArgument(field, "give either a symbol or a sector (or the market)")

    @property
    def key(self) -> str:
        if self.market:
            return "market"
        return self.symbol or f"sector/{self.sector}"


# The whole market: the subject of WatchRegimes (world_model/watch.py).
MARKET = Subject(market=True)


@dataclasses.dataclass(frozen=True, eq=False)
class _Entry:
    model: RegimeModel
    regime: int  # reported state, after hysteresis
    bars_seen: int  # bars the market had for the series when it was fitted
    report: RegimeReport


class _Shared(Generic[T]):
    """One computation awaited by several callers; cancelled once none of them waits any more.

    ``stamp`` records what it started from (for a fit: the bars the market had)."""

    def __init__(self, work: Coroutine[Any, Any, T], *, stamp: int = 0) -> None:
        self.task = asyncio.ensure_future(work)
        self.stamp = stamp
        self.abandoned = False
        self._waiters = 0

    @property
    def usable(self) -> bool:
        return not (self.abandoned or self.task.done())

    async def wait(self) -> T:
        self._waiters += 1
        try:
            return await asyncio.shield(self.task)
        finally:
            self._waiters -= 1
            if self._waiters == 0 and not self.task.done():
                self.abandoned = True
                self.task.cancel()


class WorldModel:
    """Implements :class:`qtmesh.base.contract.Agent` plus regime detection and scenarios."""

    name = "world-model"

    def __init__(self, market: MarketData, config: WorldModelConfig) -> None:
        self._market = market
        # Refits read the same long windows every hour of market time: only new bars are read.
        self._bars = BarCache(market)
        self._config = config
        self._hysteresis = config.hysteresis
        self._policy = config.exposure_policy
        self._cache: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._fitting: dict[tuple[str, int], _Shared[_Entry]] = {}
        self._sectors: list[str] = []
        self._refresh: asyncio.Task[None] | None = None

    # -- regimes -------------------------------------------------------------------------

    async def detect(self, subject: Subject, *, lookback: int = 0) -> RegimeReport:
        """The current regime of ``subject``, from a model no more than ``refit_bars`` old."""
        return (await self._entry(subject, lookback)).report

    async def _entry(self, subject: Subject, lookback: int) -> _Entry:
        if lookback < 0:
            raise InvalidArgument("lookback", f"must not be negative (got {lookback})")
        if lookback > self._config.max_lookback_bars:
            raise InvalidArgument(
                "lookback", f"must be at most {self._config.max_lookback_bars} (got {lookback})"
            )
        if lookback and lookback < self._config.min_history_bars:
            raise InvalidArgument(
                "lookback",
                f"{lookback} bars are too few: the model needs {self._config.min_history_bars} "
                f"(10 steps of {self._config.bars_per_step} bars per state)",
            )
        members = self._members(subject, await self._universe())
        available = min(m.bar_count for m in members)
        if lookback > available:
            raise InvalidArgument(
                "lookback", f"{lookback} bars requested but {subject.key} has {available}"
            )
        span = lookback or min(self._config.lookback_bars, available)
        if span < self._config.min_history_bars:
            raise FailedPrecondition(
                f"{subject.key} has {available} bars; the regime model needs "
                f"{self._config.min_history_bars}"
            )
        key = (subject.key, lookback)
        cached = self._cache.get(key)
        if cached is not None and available - cached.bars_seen < self._config.refit_bars:
            self._cache.move_to_end(key)
            return cached
        shared = self._fitting.get(key)
        # A fit in progress is joined unless it started from data that is already stale.
        if (
            shared is None
            or not shared.usable
            or available - shared.stamp >= self._config.refit_bars
        ):
            shared = _Shared(self._fit(key, subject, members, span, available), stamp=available)
            self._fitting[key] = shared
            fitting = shared

            def forget(_task: object) -> None:
                if self._fitting.get(key) is fitting:
                    del self._fitting[key]

            shared.task.add_done_callback(forget)
        return await shared.wait()

    async def _fit(
        self,
        key: tuple[str, int],
        subject: Subject,
        members: Sequence[SymbolInfo],
        span: int,
        available: int,
    ) -> _Entry:
        times, closes = await self._history(subject, members, span)
        settings = self._config.regime_settings
        seed = self._config.seed
        before = self._cache.get(key)
        warm = before.model.hmm if before is not None else None
        model = await run_cancellable(
            lambda token: fit_regimes(
                times,
                closes,
                settings=settings,
                rng=np.random.default_rng(seed),
                warm_start=warm,
                cancel=token,
            )
        )
        previous = self._cache.get(key)
        if previous is not None and previous.bars_seen > available:
            return previous  # a fit that started later, on more data, finished first
        regime = self._hysteresis.apply(
            previous.regime if previous is not None else None, model.probabilities
        )
        report = RegimeReport.of(model, regime, symbol=subject.symbol, sector=subject.sector)
        entry = _Entry(model, regime, available, report)
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self._config.cache_size:
            self._cache.popitem(last=False)
        _log.info(
            "regime model fitted",
            series=subject.key,
            bars=int(times.shape[0]),
            iterations=model.iterations,
            regime=report.regime,
            probability=round(report.probability, 3),
        )
        return entry

    async def _universe(self) -> list[SymbolInfo]:
        infos = await self._market.list_symbols()
        self._sectors = sorted({i.sector for i in infos})
        return infos

    @staticmethod
    def _members(subject: Subject, infos: Sequence[SymbolInfo]) -> list[SymbolInfo]:
        if subject.market:
            if not infos:
                raise FailedPrecondition("the market lists no symbols")
            return list(infos)
        if subject.symbol:
            found = [i for i in infos if i.symbol == subject.symbol]
            if not found:
                known = ", ".join(i.symbol for i in infos[:20])
                raise InvalidArgument(
                    "symbol", f"unknown symbol {subject.symbol!r} (known: {known})"
                )
            return found
        found = [i for i in infos if i.sector == subject.sector]
        if not found:
            known = ", ".join(sorted({i.sector for i in infos}))
            raise InvalidArgument("sector", f"unknown sector {subject.sector!r} (known: {known})")
        return found

    async def _history(
        self, subject: Subject, members: Sequence[SymbolInfo], span: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bar times and closes of the symbol, or of the sector's equal-weighted index."""
        series = await asyncio.gather(*(self._bars.latest(m.symbol, span) for m in members))
        if len(series) == 1:
            return series[0].time, series[0].close
        first = series[0].time
        if all(np.array_equal(s.time, first) for s in series[1:]):
            common = first  # the usual case: the members trade on the same bars
        else:
            common = functools.reduce(
                lambda a, b: np.intersect1d(a, b, assume_unique=True), (s.time for s in series)
            )
        if common.shape[0] < self._config.min_history_bars:
            raise FailedPrecondition(
                f"the symbols of {subject.key} share only {common.shape[0]} bar times; "
                f"the regime model needs {self._config.min_history_bars}"
            )
        # Equal weights: the index's log return is the mean of its members' log returns.
        logs = [np.log(s.close[np.searchsorted(s.time, common)]) for s in series]
        index = np.exp(np.mean([log - log[0] for log in logs], axis=0))
        return common, index

    # -- scenarios -----------------------------------------------------------------------

    async def simulate(
        self,
        subject: Subject,
        *,
        horizon: int,
        num_paths: int,
        block_size: int = 0,
        quantiles: Sequence[float] = (),
        seed: int = 0,
        regime_conditioned: bool = False,
        include_paths: bool = False,
    ) -> ScenarioSummary:
        """Block-bootstrapped paths of ``subject`` (see :mod:`world_model.scenarios`)."""
        config = self._config
        if not 1 <= horizon <= config.max_horizon:
            raise InvalidArgument("horizon", f"must be in 1..{config.max_horizon} (got {horizon})")
        if not 1 <= num_paths <= config.max_paths:
            raise InvalidArgument(
                "num_paths", f"must be in 1..{config.max_paths} (got {num_paths})"
            )
        if num_paths * horizon > config.max_simulated_values:
            raise InvalidArgument(
                "num_paths",
                f"num_paths x horizon = {num_paths * horizon} exceeds "
                f"{config.max_simulated_values}",
            )
        if include_paths and num_paths * horizon > config.max_returned_values:
            raise InvalidArgument(
                "include_paths",
                f"{num_paths * horizon} path values exceed the {config.max_returned_values} a "
                "response may carry; ask for quantiles only or fewer paths",
            )
        if block_size < 0:
            raise InvalidArgument("block_size", f"must not be negative (got {block_size})")
        quantiles = tuple(quantiles) or DEFAULT_QUANTILES
        if len(quantiles) > MAX_QUANTILES:
            raise InvalidArgument("quantiles", f"at most {MAX_QUANTILES} (got {len(quantiles)})")
        check_quantiles(quantiles)
        entry = await self._entry(subject, 0)
        model = entry.model
        history = model.returns.shape[0]
        block = block_size or min(config.block_size, history)
        if block > history:
            raise InvalidArgument(
                "block_size", f"{block} is longer than the {history} bars of history"
            )
        labels = model.bar_states if regime_conditioned else None
        current = entry.regime if regime_conditioned else None
        if regime_conditioned and not np.any(model.bar_states == entry.regime):
            raise FailedPrecondition(
                f"no bar of {subject.key}'s history is labelled {model.labels[entry.regime]}"
            )
        draw = simulate if include_paths else simulate_terminal
        rng = np.random.default_rng(seed)
        paths = await run_cancellable(
            lambda token: draw(
                model.returns,
                horizon=horizon,
                num_paths=num_paths,
                block_size=block,
                rng=rng,
                regime_labels=labels,
                current_regime=current,
                cancel=token,
            )
        )
        pool = history if labels is None else int(np.count_nonzero(labels == current))
        return ScenarioSummary(
            symbol=subject.symbol,
            sector=subject.sector,
            horizon=horizon,
            num_paths=num_paths,
            block_size=block,
            history=pool,
            regime=model.labels[entry.regime],
            regime_conditioned=regime_conditioned,
            quantiles=quantiles,
            terminal_returns=tuple(float(v) for v in terminal_quantiles(paths, quantiles)),
            paths=paths if include_paths else None,
        )

    # -- the agent -----------------------------------------------------------------------

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        """Exposure per sector from the cached sector models; never waits for a fit."""
        self.refresh_in_background()
        recommendations = []
        for sector in self._sectors:
            entry = self._cache.get((f"sector/{sector}", 0))
            if entry is None:
                continue
            recommendation = recommend_exposure(sector, entry.model, entry.regime, self._policy)
            if recommendation is not None:
                recommendations.append(recommendation)
        return recommendations

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        raise InvalidArgument("action.type", "the world model executes no actions")

    def refresh_in_background(self) -> asyncio.Task[None]:
        """Starts refitting stale sector models unless a refresh is already running."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._refresh_sectors())
        return self._refresh

    async def _refresh_sectors(self) -> None:
        try:
            sectors = sorted({i.sector for i in await self._universe()})
        except MeshError as exc:
            _log.warning("cannot list the market's symbols", error=str(exc))
            return
        for sector in sectors:
            try:
                await self._entry(Subject(sector=sector), 0)
            except MeshError as exc:
                _log.warning("cannot fit a regime model", series=f"sector/{sector}", error=str(exc))

    async def close(self) -> None:
        """Stops the background refresh and every fit in progress."""
        tasks: list[asyncio.Task[Any]] = [t for t in (self._refresh,) if t is not None]
        tasks += [shared.task for shared in self._fitting.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, MeshError):
                await task
