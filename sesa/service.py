"""The SESA gRPC service: a thin adapter from SesaService (and AgentService) to the domain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import grpc
import numpy as np
import structlog

from backtest.cluster import Cluster, DaskCluster
from backtest.evaluation import (
    MINIMUM_BARS,
    CostModel,
    EvaluationSettings,
    Evaluator,
    TrialLog,
    rescore_deflated,
)
from backtest.indicators import BarData
from market.client import MarketClient
from market.fleet import Candidate
from memory.client import MemoryClient
from memory.recorder import Recorder
from meta.client import MetaClient
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.api.sesa.v1 import sesa_pb2_grpc as pb_grpc
from qtmesh.base.bars import validate_bars
from qtmesh.base.concurrency import CancelToken, run_cancellable
from qtmesh.base.config import ConfigError
from qtmesh.base.contract import NOT_APPLIED, ActionType, Execution, ExecutionState
from qtmesh.base.convert import (
    genome_from_proto,
    genome_to_proto,
    optional_time_from_proto,
    series_from_proto,
    timestamp,
)
from qtmesh.base.errors import InvalidArgument, MeshError, Unavailable
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, reject_conflicting_ids
from qtmesh.base.hub import replay_then_follow
from qtmesh.base.storage import create_engine
from qtmesh.runtime.agent_service import AgentClient, agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import Service
from sesa import _convert as convert
from sesa.agent import (
    EvolutionOrder,
    EvolutionReport,
    FinishedEvolution,
    SesaAgent,
    ShadowBook,
    book_candidates,
    book_strategy_id,
    evolution_id,
    evolution_seed,
)
from sesa.config import ENV_PREFIX, SesaConfig
from sesa.events import EventLog
from sesa.evolution import (
    EvaluationType,
    Evolution,
    EvolutionConfig,
    EvolutionResult,
    GenerationStats,
)
from sesa.forward import Scenarios, Simulator, bootstrap, draw_scenarios, world_model_bars
from sesa.memory import EvolutionMemory
from sesa.mutation import OPERATORS
from sesa.priors import Priors, TunedParameters
from sesa.scenarios import BlockBootstrap
from sesa.selection import SelectionConfig, judge, select
from sesa.store import ENDED, GENERATION, STARTED, EvolutionStore, StoredEvent
from world_model.client import WorldModelClient

DAY_NANOS = 86_400 * 10**9
HISTORY_PAGE = 200  # events read from the store at a time when a subscriber resumes
_log = structlog.get_logger("sesa")


class _Figures:
    """SESA's own metrics: every evolution's generations and evaluations, and those running."""

    def __init__(self, metrics: Metrics) -> None:
        self.generations = metrics.counter(
            "qtmesh_evolution_generations_total",
            "Generations completed by evolutions (Evolve and RUN_EVOLUTION; generation 0 "
            "evaluates the seeds)",
        )
        self.evaluations = metrics.counter(
            "qtmesh_evaluations_total",
            "Strategies evaluated, by evolutions and by Evaluate (one per distinct genome "
            "backtested or simulated)",
        )
        self.running = metrics.gauge("qtmesh_evolutions_running", "Evolutions running now")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Run:
    """One evolution to run and publish: everything it needs once validated."""

    name: str  # the evolution id
    symbol: str
    sector: str
    data: BarData
    seeds: list[StrategyGenome]
    evolution: Evolution
    config: EvolutionConfig
    evaluator: Evaluator
    selection: SelectionConfig
    seed: int
    prior_trials: int
    origin: pb.ActionOrigin | pb.EvolveOrigin
    # Sends the result's candidates to the market's book (None: they are only returned).
    book: Callable[[EvolutionResult], Awaitable[ShadowBook]] | None
    # The bars are a market symbol's window (not given inline): the world model has them.
    market_bars: bool = True


class SesaServicer(pb_grpc.SesaServiceServicer):
    def __init__(
        self,
        *,
        config: SesaConfig,
        market: MarketClient,
        events: EventLog,
        meta: MetaClient | None = None,
        policy: Policy | None = None,
        memory: EvolutionMemory | None = None,
        world_model: Simulator | None = None,
        metrics: Metrics | None = None,
        cluster: Cluster | None = None,
        book: AgentClient | None = None,
    ):
        self._config = config
        self._cluster = cluster
        self._book = book
        self._figures = _Figures(metrics or Metrics())
        self._world_model = world_model
        self._memory = memory
        self.events = events
        self._market = market
        self._meta = meta
        self._policy = policy or Policy()
        self._windows: OrderedDict[tuple[str, int, int, int], BarData] = OrderedDict()
        self.agent = SesaAgent(
            run_evolution=self._run_order,
            check_order=self._check_order,
            default_symbols=config.symbols,
            review=memory.review if memory is not None and memory.recalls else None,
            recorded=self._recorded,
        )

    # -- RPCs ------------------------------------------------------------------------------------

    async def Evolve(
        self, request: pb.EvolveRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EvolveResponse]:
        config = convert.evolution_config_from_proto(request.config)
        evaluator = self._evaluator(
            request.config.costs,
            request.config.HasField("costs"),
            request.config.weights,
            request.config.HasField("weights"),
        )
        selection = (
            SelectionConfig(top_k=request.config.top_k)
            if request.config.HasField("top_k")
            else SelectionConfig()
        )
        if len(request.seeds) > self._config.max_genomes:
            raise InvalidArgument(
                "seeds", f"{len(request.seeds)} genomes exceed {self._config.max_genomes}"
            )
        # Checked now, so a bad seed fails before the evolution starts (and is published).
        seeds = [
            self._policy.validate(genome_from_proto(g, field=f"seeds[{i}]"), field=f"seeds[{i}]")
            for i, g in enumerate(request.seeds)
        ]
        reject_conflicting_ids(seeds, field="seeds")
        data = await self._bars(request.bars, field="bars", days=config.evaluation_lookback_days)
        config.check_scenario_bars(data.n)
        book_key = request.shadow_book_key
        sector = data.sector
        if book_key:
            # Checked before the work: the book takes only symbols the market trades.
            sector = (await self._sectors()).get(data.symbol, "")
            if not sector:
                raise InvalidArgument(
                    "shadow_book_key",
                    f"the bars are of {data.symbol!r}, not a market symbol: its candidates "
                    "cannot join the book",
                )
            evolution_name = evolution_id("evolve", book_key, data.symbol)
        else:
            evolution_name = f"evo-{uuid.uuid4().hex[:12]}"
        evolution = await self._evolution(
            config, evaluator, selection, request.seed, request.prior_trials
        )
        run = _Run(
            name=evolution_name,
            symbol=data.symbol,
            sector=sector,
            data=data,
            seeds=seeds,
            evolution=evolution,
            config=config,
            evaluator=evaluator,
            selection=selection,
            seed=request.seed,
            prior_trials=request.prior_trials,
            origin=pb.EvolveOrigin(
                peer=context.peer() or "",
                request_id=str(structlog.contextvars.get_contextvars().get("request_id", "")),
                shadow_book_key=book_key,
            ),
            book=(
                None
                if not book_key
                else lambda result: self._add_to_book(
                    result,
                    symbol=data.symbol,
                    sector=sector,
                    evolution_name=evolution_name,
                    key=book_key,
                    action_id="",
                    plan_sequence=0,
                )
            ),
            market_bars=request.bars.WhichOneof("source") != "bars",
        )
        async with contextlib.aclosing(self._evolving(run)) as events:
            async for event in events:
                if isinstance(event, GenerationStats):
                    yield pb.EvolveResponse(generation=convert.stats_to_proto(event))
                else:
                    yield pb.EvolveResponse(result=convert.result_to_proto(event.result, event))

    async def WatchEvolutions(
        self, request: pb.WatchEvolutionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchEvolutionsResponse]:
        after = request.after_sequence if request.HasField("after_sequence") else None
        # Headers once the request is known good, so a subscriber knows it is connected.
        events = replay_then_follow(
            self.events,
            after,
            page_size=HISTORY_PAGE,
            connected=lambda: context.send_initial_metadata(()),
        )
        async with contextlib.aclosing(events):
            async for event in events:
                yield _event_message(event)

    async def Evaluate(
        self, request: pb.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> pb.EvaluateResponse:
        genomes = self._genomes(request.genomes, "genomes")
        evaluator = self._evaluator(
            request.costs, request.HasField("costs"), request.weights, request.HasField("weights")
        )
        data = await self._bars(request.bars, field="bars", days=30)
        if request.trials < 0:
            raise InvalidArgument("trials", "must not be negative")
        trials = TrialLog(prior=max(request.trials - len({g.id for g in genomes}), 0))
        prior = trials.count
        evaluations = await run_cancellable(
            lambda token: evaluator.evaluate(genomes, data, trials=trials, token=token)
        )
        self._figures.evaluations.inc(trials.count - prior)
        selection = SelectionConfig()
        return pb.EvaluateResponse(
            evaluations=[convert.evaluation_to_proto(e, judge(e, selection)) for e in evaluations]
        )

    async def Mutate(
        self, request: pb.MutateRequest, context: grpc.aio.ServicerContext
    ) -> pb.MutateResponse:
        parents = self._genomes(request.parents, "parents")
        name = convert.OPERATOR_NAMES.get(request.operator)
        if name is None:
            raise InvalidArgument("operator", f"must be set to one of {sorted(OPERATORS)}")
        operator = OPERATORS[name]
        if len(parents) < operator.parent_count:
            raise InvalidArgument("parents", f"{name} needs {operator.parent_count} parents")
        # Every parent breeds (each takes a turn as the first mate), so each must fit.
        for i, parent in enumerate(parents):
            if not operator.applies_to(parent.family):
                raise InvalidArgument(
                    f"parents[{i}]", f"{name} does not apply to {parent.family.name}"
                )
        if not 1 <= request.count <= self._config.max_genomes:
            raise InvalidArgument(
                "count", f"{request.count} is not in 1..{self._config.max_genomes}"
            )
        rng = np.random.default_rng(request.seed)
        generation = max(p.generation for p in parents) + 1
        children = []
        for i in range(request.count):
            first = parents[i % len(parents)]
            mates = [first, *(p for p in parents if p is not first)][
                : max(operator.parent_count, 1)
            ]
            children.append(
                operator.mutate(
                    mates,
                    policy=self._policy,
                    rng=rng,
                    magnitude=request.magnitude,
                    rate=request.rate,
                    generation=generation,
                )
            )
        return pb.MutateResponse(children=[genome_to_proto(c) for c in children])

    async def Select(
        self, request: pb.SelectRequest, context: grpc.aio.ServicerContext
    ) -> pb.SelectResponse:
        if not request.evaluations:
            raise InvalidArgument("evaluations", "no evaluations given")
        if len(request.evaluations) > self._config.max_genomes:
            raise InvalidArgument("evaluations", f"more than {self._config.max_genomes}")
        evaluations = [
            convert.evaluation_from_proto(e, field=f"evaluations[{i}]")
            for i, e in enumerate(request.evaluations)
        ]
        for i, e in enumerate(evaluations):
            self._policy.validate(e.genome, field=f"evaluations[{i}].genome")
        reject_conflicting_ids(
            [e.genome for e in evaluations], field="evaluations", suffix=".genome.id"
        )
        config = convert.selection_from_proto(request.config)
        if request.trials < 0:
            raise InvalidArgument("trials", "must not be negative")
        if request.trials:
            log = TrialLog(prior=max(request.trials - len(evaluations), 0))
            for e in evaluations:
                log.add(e.out_of_sample.per_bar_sharpe)
            evaluations = [rescore_deflated(e, log) for e in evaluations]
        selected, judged = select(evaluations, config, policy=self._policy)
        return pb.SelectResponse(
            selected=[convert.judgement_to_proto(j) for j in selected],
            judged=[convert.judgement_to_proto(j) for j in judged],
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _genomes(self, messages, field: str) -> list:
        if not messages:
            raise InvalidArgument(field, "no genomes given")
        if len(messages) > self._config.max_genomes:
            raise InvalidArgument(
                field, f"{len(messages)} genomes exceed {self._config.max_genomes}"
            )
        genomes = [
            self._policy.validate(
                genome_from_proto(g, field=f"{field}[{i}]"), field=f"{field}[{i}]"
            )
            for i, g in enumerate(messages)
        ]
        reject_conflicting_ids(genomes, field=field)
        return genomes

    def _evaluator(self, costs, has_costs: bool, weights, has_weights: bool) -> Evaluator:
        default_costs = CostModel(
            commission_bps=self._config.commission_bps, slippage_bps=self._config.slippage_bps
        )
        settings = EvaluationSettings(
            costs=convert.costs_from_proto(costs, has_costs, default_costs),
            weights=convert.weights_from_proto(weights, has_weights),
            folds=self._config.walk_forward_folds,
            embargo_minutes=self._config.embargo_minutes,
        )
        return Evaluator(policy=self._policy, settings=settings, cluster=self._cluster)

    async def _evolution(
        self, config, evaluator, selection, seed: int, prior_trials: int
    ) -> Evolution:
        if prior_trials < 0:
            raise InvalidArgument("prior_trials", "must not be negative")
        return Evolution(
            evaluator=evaluator,
            selection=selection,
            config=config,
            rng=np.random.default_rng(seed),
            prior_trials=prior_trials,
        )

    async def _draw_scenarios(self, run: _Run) -> Scenarios | None:
        """Where a SIMULATION's paths come from (sesa/forward.py); None for a BACKTEST."""
        if run.config.evaluation_type is not EvaluationType.SIMULATION:
            return None
        if self._world_model is None:
            return bootstrap("world-model scenarios are off (world_model_scenarios)")
        if not run.market_bars:
            return bootstrap("the bars were given inline: the world model has only the market's")
        return await draw_scenarios(
            self._world_model,
            symbol=run.symbol,
            paths=run.config.scenario_paths,
            bars=run.data.n,
            block_size=self._config.scenario_block_bars,
            seed=run.seed,
        )

    def _scenarios(
        self,
        data: BarData,
        config: EvolutionConfig,
        seed: int,
        token: CancelToken,
        drawn: Scenarios | None = None,
    ) -> list[BarData]:
        if config.evaluation_type is not EvaluationType.SIMULATION:
            return []
        if drawn is not None and drawn.log_paths is not None:
            return world_model_bars(drawn.log_paths, data, seed=seed, token=token)
        generator = BlockBootstrap(block_size=self._config.scenario_block_bars)
        # A stream of its own, so scenarios do not shift the evolution's random draws.
        rng = np.random.default_rng([seed, 1])
        paths = []
        # One path per call (the same draws as all at once) so a cancel stops between paths.
        for _ in range(config.scenario_paths):
            token.raise_if_cancelled()
            (path,) = generator.generate(data.series, count=1, length=data.n, rng=rng)
            paths.append(BarData(path, bars_per_year=data.bars_per_year))
        return paths

    async def _bars(self, source: pb.BarSource, *, field: str, days: int) -> BarData:
        kind = source.WhichOneof("source")
        if kind == "bars":
            series = series_from_proto(source.bars)

            def where(column: str, index: int | None) -> str:
                name = "time_unix_nanos" if column == "time" else column
                return f"{field}.bars.{name}" + ("" if index is None else f"[{index}]")

            validate_bars(series, where)
        else:
            window = source.window if kind == "window" else pb.BarWindow()
            symbol = window.symbol or self._config.symbols[0]
            if window.lookback < 0:
                raise InvalidArgument(f"{field}.window.lookback", "must not be negative")
            end = optional_time_from_proto(window, "end_time")
            try:
                if window.lookback:
                    series = await self._market.bars(symbol, lookback=window.lookback, end_time=end)
                else:
                    if end is None:
                        end = (await self._market.snapshot([symbol])).clock_time
                    series = await self._market.bars(
                        symbol, start_time=end - days * DAY_NANOS + 1, end_time=end
                    )
            except InvalidArgument as exc:
                # The market names its own fields; name ours.
                name = "symbol" if exc.field.startswith("symbol") else exc.field
                raise InvalidArgument(f"{field}.window.{name}", exc.problem) from None
        if not MINIMUM_BARS <= len(series) <= self._config.max_bars:
            raise InvalidArgument(
                field,
                f"{len(series)} bars; evaluation needs {MINIMUM_BARS}..{self._config.max_bars}",
            )
        key = (series.symbol, int(series.time[0]), int(series.time[-1]), len(series))
        cached = self._windows.get(key)
        # Fills, ATR, channels and the time-of-day filter read every column, not only closes.
        if cached is not None and all(
            np.array_equal(getattr(cached.series, column), getattr(series, column))
            for column in ("time", "open", "high", "low", "close")
        ):
            self._windows.move_to_end(key)
            return cached
        data = BarData(series)
        self._windows[key] = data
        while len(self._windows) > self._config.cached_windows:
            self._windows.popitem(last=False)
        return data

    # -- RUN_EVOLUTION (the agent calls these) -----------------------------------------------

    async def _in_the_book(self, key: str) -> Execution:
        """Whether the market's book holds shadows added under ``key``: an evolution of the key
        that finished on another replica, or on this one before its log was lost (a pod moved).
        A key of several symbols is recorded per symbol (``key/SYMBOL``) and not found here;
        nor is an evolution whose candidates all failed the gates: those run again."""
        if self._book is None:
            return NOT_APPLIED
        try:
            known = await self._book.execution(key)
        except MeshError as exc:
            _log.warning("could not ask the market's book for a key", key=key, error=repr(exc))
            return NOT_APPLIED
        if known.state is not ExecutionState.APPLIED:
            return NOT_APPLIED
        return Execution(
            ExecutionState.APPLIED,
            f"finished before, its candidates in the market's book: {known.detail}",
            {"book": known.detail},
        )

    async def _recorded(self, key: str) -> Execution:
        """What the evolution log kept of the RUN_EVOLUTION under ``key``: applied when the
        latest run of every one of its symbols finished (the log is bounded: a key older than
        what it keeps reads as not applied, and would run again); a key the log does not know,
        what the market's book recorded of it (:meth:`_in_the_book`)."""
        store = self.events.store
        symbols: list[str] | None = None
        latest: dict[str, int] = {}  # symbol -> start sequence of its latest run
        ended: dict[int, pb.EvolutionEnded] = {}
        names: dict[str, str] = {}
        for event in await store.run(store.lifecycle):
            message = pb.WatchEvolutionsResponse.FromString(event.payload)
            if event.kind == ENDED:
                ended[event.start_sequence] = message.ended
                continue
            started = message.started
            if started.WhichOneof("origin") == "action" and started.action.action_key == key:
                symbols = list(started.action.symbols)
                latest[started.symbol] = event.sequence
                names[started.symbol] = event.evolution_id
        if symbols is None:
            return await self._in_the_book(key)
        for symbol in symbols:
            end = ended.get(latest.get(symbol, -1))
            if end is None or end.outcome != pb.EVOLUTION_OUTCOME_FINISHED:
                return NOT_APPLIED
        return Execution(
            ExecutionState.APPLIED,
            "finished before SESA restarted: " + ", ".join(names[s] for s in symbols),
            {"evolution_id": ",".join(names[s] for s in symbols), "symbols": ",".join(symbols)},
        )

    async def _check_order(self, order: EvolutionOrder) -> None:
        """Rejects what no evolution could run: unknown symbols, generations out of range."""
        field = "action.parameters.run_evolution"
        if not 0 <= order.generations <= 1000:
            raise InvalidArgument(f"{field}.generations", f"{order.generations} is not in 0..1000")
        sectors = await self._sectors()
        for i, symbol in enumerate(order.symbols):
            if symbol not in sectors:
                raise InvalidArgument(f"{field}.symbols[{i}]", f"unknown symbol {symbol!r}")

    async def _run_order(self, order: EvolutionOrder) -> EvolutionReport:
        """Runs a RUN_EVOLUTION to its end: meta's parameters (or SESA's defaults), one
        evolution per symbol, each one's candidates into the market's book as shadows."""
        priors = await self._priors()
        generations = order.generations or EvolutionConfig().num_generations
        config = priors.config(EvolutionConfig(num_generations=generations))
        seeds = priors.seeds(self._policy)
        sectors = await self._sectors()
        evaluator = self._evaluator(pb.CostModel(), False, pb.ScoreWeights(), False)
        finished = []
        for symbol in order.symbols:
            name = evolution_id("run_evolution", order.key, symbol)
            data = await self._bars(
                pb.BarSource(window=pb.BarWindow(symbol=symbol)),
                field="action.parameters.run_evolution.symbols",
                days=config.evaluation_lookback_days,
            )
            seed = evolution_seed(order.key, symbol)
            selection = SelectionConfig()
            evolution = await self._evolution(config, evaluator, selection, seed, 0)
            sector = sectors[symbol]

            def book(
                result: EvolutionResult,
                symbol: str = symbol,
                sector: str = sector,
                name: str = name,
            ) -> Awaitable[ShadowBook]:
                return self._add_to_book(
                    result,
                    symbol=symbol,
                    sector=sector,
                    evolution_name=name,
                    key=order.book_key(symbol),
                    action_id=order.action_id,
                    plan_sequence=order.plan_sequence,
                )

            run = _Run(
                name=name,
                symbol=symbol,
                sector=sector,
                data=data,
                seeds=seeds,
                evolution=evolution,
                config=config,
                evaluator=evaluator,
                selection=selection,
                seed=seed,
                prior_trials=0,
                origin=pb.ActionOrigin(
                    action_key=order.key,
                    action_id=order.action_id,
                    plan_sequence=order.plan_sequence,
                    symbols=order.symbols,
                    book_key=order.book_key(symbol),
                    meta_version=priors.version,
                ),
                book=book,
            )
            done = None
            async with contextlib.aclosing(self._evolving(run)) as events:
                async for event in events:
                    if isinstance(event, FinishedEvolution):
                        done = event
            assert done is not None
            result, book_change = done.result, done.shadow_book
            finished.append(done)
            _log.info(
                "evolution finished",
                evolution_id=name,
                symbol=symbol,
                key=order.key,
                trials=result.trials,
                candidates=list(book_change.strategy_ids) if book_change else [],
                meta_version=priors.version,
            )
        return EvolutionReport(order, priors, config, tuple(seeds), tuple(finished))

    async def _evolving(
        self, run: _Run
    ) -> AsyncGenerator[GenerationStats | FinishedEvolution, None]:
        """:meth:`_published`, counted as running until it ends."""
        running = self._figures.running
        running.inc()
        try:
            async with contextlib.aclosing(self._published(run)) as events:
                async for event in events:
                    yield event
        finally:
            running.dec()

    async def _published(
        self, run: _Run
    ) -> AsyncGenerator[GenerationStats | FinishedEvolution, None]:
        """Runs ``run``, yielding each generation's stats, then the finished evolution, and
        publishes its start, every generation and its end (finished, failed or cancelled)."""
        data, config, evolution = run.data, run.config, run.evolution
        started = pb.EvolutionStarted(
            symbol=run.symbol,
            sector=run.sector,
            config=convert.evolution_config_to_proto(
                config, run.evaluator.settings, run.selection.top_k
            ),
            seed=run.seed,
            prior_trials=run.prior_trials,
            seed_count=len(run.seeds) or len(StrategyFamily),
            bars_end_time=timestamp(int(data.time[-1])),
            bar_count=data.n,
        )
        if isinstance(run.origin, pb.ActionOrigin):
            started.action.CopyFrom(run.origin)
        else:
            started.evolve.CopyFrom(run.origin)
        drawn = await self._draw_scenarios(run)
        if drawn is not None:
            started.scenarios.CopyFrom(convert.scenario_source_to_proto(drawn.source))
        start = (await self._publish(run.name, STARTED, 0, started=started)).sequence
        result: EvolutionResult | None = None
        book: ShadowBook | None = None
        figures, trials = self._figures, evolution.trials.count

        def completed(stats: GenerationStats) -> GenerationStats:
            """Counts a generation done and the genomes it evaluated (the trials it added)."""
            nonlocal trials
            figures.generations.inc()
            figures.evaluations.inc(stats.trials - trials)
            trials = stats.trials
            return stats

        try:
            # Bootstrapping the paths is heavy work too: off the event loop and cancellable.
            stats = completed(
                await run_cancellable(
                    lambda token: evolution.start(
                        run.seeds,
                        data,
                        paths=self._scenarios(data, config, run.seed, token, drawn),
                        token=token,
                    )
                )
            )
            await self._publish(run.name, GENERATION, start, generation=stats)
            yield stats
            while not evolution.finished:
                stats = completed(await run_cancellable(evolution.step))
                await self._publish(run.name, GENERATION, start, generation=stats)
                yield stats
            # Judging the archive and its PBO are heavy for large runs: off the event loop.
            result = await asyncio.to_thread(evolution.result)
            if run.book is not None:
                book = await run.book(result)
        except (asyncio.CancelledError, GeneratorExit):
            await self._ended(
                run,
                start,
                pb.EvolutionEnded(
                    outcome=pb.EVOLUTION_OUTCOME_CANCELLED,
                    error_message="cancelled: its caller went away or SESA shut down",
                ),
                result,
                book,
            )
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, MeshError) else "INTERNAL"
            message = exc.message if isinstance(exc, MeshError) else repr(exc)
            await self._ended(
                run,
                start,
                pb.EvolutionEnded(
                    outcome=pb.EVOLUTION_OUTCOME_FAILED, error_code=code, error_message=message
                ),
                result,
                book,
            )
            raise
        finished = FinishedEvolution(
            result, run.symbol, run.sector, int(data.time[-1]), run.name, book
        )
        self.agent.remember(finished)
        if self._memory is not None and run.market_bars:
            self._memory.record(finished, config, _origin_tags(run.origin))
        await self._ended(
            run, start, pb.EvolutionEnded(outcome=pb.EVOLUTION_OUTCOME_FINISHED), result, book
        )
        yield finished

    async def _ended(
        self,
        run: _Run,
        start: int,
        ended: pb.EvolutionEnded,
        result: EvolutionResult | None,
        book: ShadowBook | None,
    ) -> None:
        if result is not None:
            ended.summary.CopyFrom(convert.summary_to_proto(result, run.symbol, book))
        if ended.outcome == pb.EVOLUTION_OUTCOME_FINISHED:
            await self._publish(run.name, ENDED, start, ended=ended)
            return
        # Already failing: a log that cannot be written is logged, not raised over the cause.
        try:
            await self._publish(run.name, ENDED, start, ended=ended)
        except Exception as exc:  # pragma: no cover - the store failing as well
            _log.error("evolution end not recorded", evolution_id=run.name, error=repr(exc))

    async def _publish(
        self,
        name: str,
        kind: int,
        start: int,
        *,
        started: pb.EvolutionStarted | None = None,
        generation: GenerationStats | None = None,
        ended: pb.EvolutionEnded | None = None,
    ) -> StoredEvent:
        message = pb.WatchEvolutionsResponse(evolution_id=name)
        if started is not None:
            message.started.CopyFrom(started)
        if generation is not None:
            message.generation.CopyFrom(convert.stats_to_proto(generation))
        if ended is not None:
            message.ended.CopyFrom(ended)
        return await self.events.append(
            name, kind, message.SerializeToString(), start_sequence=start
        )

    async def _priors(self) -> Priors:
        """Meta's current parameters; SESA's own defaults when meta cannot be read."""
        if self._meta is None:
            return Priors(None, "SESA has no meta client")
        try:
            p = await self._meta.parameters()
        except MeshError as exc:
            _log.warning("meta parameters unavailable; SESA's defaults used", error=repr(exc))
            return Priors(None, f"{exc.code}: {exc.message}")
        return Priors(TunedParameters.of(p))

    async def _sectors(self) -> dict[str, str]:
        return {s.symbol: s.sector for s in await self._market.list_symbols()}

    async def _add_to_book(
        self,
        result: EvolutionResult,
        *,
        symbol: str,
        sector: str,
        evolution_name: str,
        key: str,
        action_id: str,
        plan_sequence: int,
    ) -> ShadowBook:
        """Sends the evolution's selected candidates to the market's book as shadows (nothing
        when none passed the gates)."""
        chosen = book_candidates(result)
        if not chosen:
            return ShadowBook((), False, 0, "no candidate passed the gates: none sent")
        candidates = [
            Candidate(book_strategy_id(symbol, j.genome_id), sector, j.evaluation.genome)
            for j in chosen
        ]
        change, applied = await self._market.add_shadows(
            candidates,
            evolution_id=evolution_name,
            trials=result.trials,
            action_key=key,
            action_id=action_id,
            plan_sequence=plan_sequence,
        )
        return ShadowBook(
            tuple(c.strategy_id for c in candidates), applied, change.sequence, change.detail
        )

    async def close(self) -> None:
        try:
            await self.agent.close()
        finally:
            if self._memory is not None:
                await self._memory.close()


def _origin_tags(origin: pb.ActionOrigin | pb.EvolveOrigin) -> dict[str, str]:
    """Where an evolution came from, as the tags of its memory episode."""
    if isinstance(origin, pb.ActionOrigin):
        return {
            "started_by": origin.action_key,
            "plan_sequence": str(origin.plan_sequence),
            "meta_version": origin.meta_version,
        }
    return {"started_by": origin.shadow_book_key or "evolve"}


def _event_message(event: StoredEvent) -> pb.WatchEvolutionsResponse:
    message = pb.WatchEvolutionsResponse.FromString(event.payload)
    message.sequence = event.sequence
    message.start_sequence = event.start_sequence
    message.event_time.CopyFrom(timestamp(event.event_time))
    return message


async def _record_interrupted(events: EventLog) -> None:
    """Ends the runs a previous SESA left started (it stopped without closing: a crash)."""
    store = events.store
    for start, name in await store.run(store.unended):
        message = pb.WatchEvolutionsResponse(
            evolution_id=name,
            ended=pb.EvolutionEnded(
                outcome=pb.EVOLUTION_OUTCOME_INTERRUPTED,
                error_message="SESA stopped before the evolution ended",
            ),
        )
        await events.append(name, ENDED, message.SerializeToString(), start_sequence=start)


def services(servicer: SesaServicer) -> list[Service]:
    """SesaService and SESA's AgentService, both served by ``servicer``."""
    return [
        Service.of(
            servicer,
            pb_grpc.add_SesaServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["SesaService"],
        ),
        agent_service(servicer.agent, executes=[ActionType.RUN_EVOLUTION]),
    ]


def open_cluster(config: SesaConfig) -> DaskCluster:
    """The Dask cluster of ``cluster_address``; a ConfigError naming the setting when no
    scheduler answers there."""
    try:
        return DaskCluster(
            address=config.cluster_address,
            task_size=config.cluster_task_size,
            connect_timeout_seconds=config.cluster_connect_seconds,
        )
    except (Unavailable, InvalidArgument) as exc:
        raise ConfigError("cluster_address", exc.message) from None


async def build(ctx: Context[SesaConfig]) -> Built:
    config = ctx.config
    store = await asyncio.to_thread(
        config.open, lambda url: EvolutionStore(create_engine(url), keep=config.kept_events)
    )
    try:
        events = EventLog(store, queue_size=config.watch_queue_events)
        await _record_interrupted(events)
    except BaseException:
        store.close()
        raise
    market = ctx.client("market", MarketClient)
    memory = None
    if config.uses_memory:
        client = ctx.client("memory", MemoryClient)
        memory = EvolutionMemory(
            market=market,
            memory=client,
            recorder=Recorder(client, writer="sesa") if config.record_to_memory else None,
            recall=config.recall_from_memory,
            timeout=config.memory_timeout_seconds,
        )
        memory.start()
    cluster = None
    if config.cluster_address:
        cluster = await asyncio.to_thread(open_cluster, config)
    servicer = SesaServicer(
        config=config,
        cluster=cluster,
        book=ctx.client("market", AgentClient),
        market=market,
        meta=ctx.client("meta", MetaClient),
        events=events,
        memory=memory,
        world_model=(
            ctx.client("world-model", WorldModelClient) if config.world_model_scenarios else None
        ),
        metrics=ctx.metrics,
    )

    async def close() -> None:
        try:
            await servicer.close()  # running evolutions end (cancelled) and say so in the log
        finally:
            store.close()
            if cluster is not None:
                await asyncio.to_thread(cluster.close)

    return Built(services=services(servicer), drain=events.drain, close=close)


APP = App(
    name="sesa",
    summary="strategy evolution: mutate, evaluate, select over generations",
    config_type=SesaConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=lambda config: (
        Uses(service="market", client=MarketClient),
        # The market as an agent: what its book recorded under a RUN_EVOLUTION's key.
        Uses(service="market", client=functools.partial(AgentClient, name="market"), timeout=5.0),
        # Read once per RUN_EVOLUTION; meta only follows SESA's evolutions (a followed use,
        # no start-order edge): no start-order cycle.
        Uses(service="meta", client=MetaClient, timeout=config.meta_timeout_seconds),
        # Stores finished evolutions and recalls past ones; memory calls only the market. The
        # recorder retries itself, and a recall that fails leaves the recommendation as it was.
        *(
            (
                Uses(
                    service="memory",
                    client=MemoryClient,
                    timeout=config.memory_timeout_seconds,
                    retry_unavailable=False,
                ),
            )
            if config.uses_memory
            else ()
        ),
        # A SIMULATION's scenario paths; the world model calls only the market: no cycle. With
        # the world model down or refusing, SESA bootstraps its own paths (sesa/forward.py).
        *(
            (
                Uses(
                    service="world-model",
                    client=WorldModelClient,
                    timeout=config.world_model_timeout_seconds,
                ),
            )
            if config.world_model_scenarios
            else ()
        ),
    ),
)
