"""SESA as an agent of the Global Action Plan: it asks for evolutions and runs them.

``ExecuteAction(RUN_EVOLUTION)`` completes when the evolution has finished, not when it
started. The evolution itself is the service's (``run_evolution``: meta's parameters, the bars,
the generations, the market's shadow book); this module owns what the action contract needs
around it:

* **One run per idempotency key.** A key asked again while its evolution runs (a retry after a
  timed-out attempt) waits for that evolution; asked after it finished, it gets its result. A
  run that failed is forgotten, so its key may run again.
* **One evolution at a time.** Each takes every core. A new key asking for the same symbols and
  generations as a running (or waiting) evolution joins it; any other waits its turn.
* **The result** says what was found (detail) and, in ``outcome``: ``evolution_id``,
  ``candidates`` (the book's strategy ids sent as shadows, comma-separated), ``trials``,
  ``meta_version`` and the settings used (see :meth:`EvolutionReport.outcome`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import structlog

from qtmesh.base.contract import (
    NOT_APPLIED,
    Action,
    AgentContext,
    Execution,
    ExecutionResult,
    ExecutionState,
    Priority,
    Recommendation,
    RunEvolution,
)
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyFamily, StrategyGenome
from sesa.evolution import EvolutionConfig, EvolutionResult
from sesa.priors import RL_GENES, Priors
from sesa.selection import Judgement

DAY_NANOS = 86_400 * 10**9
COMPLETED_HINT = "completed/run_evolution"
_log = structlog.get_logger("sesa.agent")
# Changes a recommendation before it is given (None: withdraws it); see sesa.memory.
Review = Callable[[Recommendation, AgentContext], Awaitable[Recommendation | None]]


def book_strategy_id(symbol: str, genome_id: str) -> str:
    """The strategy id of a candidate in the market's book: ``SYMBOL/<genome id>`` makes it
    trade the symbol it was evolved on."""
    return f"{symbol}/{genome_id}"


def book_candidates(result: EvolutionResult) -> list[Judgement]:
    """The candidates an evolution sends to the book as shadows: its selected strategies (the
    diverse top-K of those that passed every gate out of sample), best first."""
    return [j for j in result.top if j.passed_gates]


def evolution_id(namespace: str, key: str, symbol: str) -> str:
    """A stable evolution id for a keyed run (the same key and symbol give the same id, so a
    run repeated after a restart names the evolution the market's book already recorded)."""
    digest = hashlib.blake2b(f"{namespace}\0{key}\0{symbol}".encode(), digest_size=6)
    return f"evo-{digest.hexdigest()}"


def evolution_seed(key: str, symbol: str) -> int:
    """The random seed of a keyed run: a key reproduces its evolution on the same bars."""
    digest = hashlib.blake2b(f"seed\0{key}\0{symbol}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


@dataclasses.dataclass(frozen=True)
class ShadowBook:
    """What the market's strategy book did with an evolution's candidates."""

    strategy_ids: tuple[str, ...]  # sent, best first (any already in the book stays as it is)
    applied: bool  # False: the key had been used; the book kept the first addition
    change_sequence: int  # the fleet change that added them; 0 when nothing was sent
    detail: str


@dataclasses.dataclass(frozen=True)
class FinishedEvolution:
    result: EvolutionResult
    symbol: str
    sector: str
    finished_time: int  # Unix nanoseconds on the clock the evolution ran at
    evolution_id: str = ""
    shadow_book: ShadowBook | None = None  # None: the candidates were not sent to the book


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvolutionOrder:
    """A RUN_EVOLUTION to run: the action's key, id and plan, its symbols and generations
    (0: the default)."""

    key: str
    action_id: str
    plan_sequence: int
    symbols: tuple[str, ...]
    generations: int

    def book_key(self, symbol: str) -> str:
        """The action key the book records the symbol's shadows under: the action's own key
        (with ``/SYMBOL`` appended when the action names several symbols)."""
        return self.key if len(self.symbols) == 1 else f"{self.key}/{symbol}"


@dataclasses.dataclass(frozen=True)
class EvolutionReport:
    """A finished RUN_EVOLUTION: the priors, settings and seeds it used and each symbol's
    evolution, in the order's symbol order."""

    order: EvolutionOrder
    priors: Priors
    config: EvolutionConfig
    seeds: tuple[StrategyGenome, ...]
    evolutions: tuple[FinishedEvolution, ...]

    def q_learning_seed(self) -> StrategyGenome:
        return next(s for s in self.seeds if s.family is StrategyFamily.Q_LEARNING)

    def outcome(self) -> dict[str, str]:
        """Machine-readable results. Per-evolution values (``evolution_id``, ``trials``,
        ``fleet_change``) list one entry per symbol, comma-separated in symbol order;
        ``candidates`` lists the book's strategy ids of every symbol's candidates."""
        e = self.evolutions
        books = [f.shadow_book for f in e]
        q = self.q_learning_seed()
        outcome = {
            "evolution_id": ",".join(f.evolution_id for f in e),
            "symbols": ",".join(f.symbol for f in e),
            "sectors": ",".join(f.sector for f in e),
            "candidates": ",".join(s for b in books if b for s in b.strategy_ids),
            "fleet_change": ",".join(str(b.change_sequence if b else 0) for b in books),
            "trials": ",".join(str(f.result.trials) for f in e),
            "generations": str(self.config.num_generations),
            "meta_version": self.priors.version,
            "mutation_rate": str(self.config.mutation_rate),
            "mutation_magnitude": str(self.config.mutation_magnitude),
            **{f"q_learning_{gene}": str(q.parameters[gene]) for gene in RL_GENES},
            "started_by": self.order.key,
        }
        if self.priors.unavailable:
            outcome["meta_error"] = self.priors.unavailable
        return outcome

    def detail(self) -> str:
        parts = [_evolution_detail(f, self.config) for f in self.evolutions]
        return "; ".join(parts) + ". " + self._priors_detail()

    def _priors_detail(self) -> str:
        c = self.config
        q = self.q_learning_seed().parameters
        settings = (
            f"mutation rate {c.mutation_rate:g}, magnitude {c.mutation_magnitude:g}, Q-learning "
            f"seed learning rate {q['learning_rate']:g}, exploration {q['exploration']:g}, "
            f"discount {q['discount']:g}"
        )
        if self.priors.tuned is None:
            return (
                f"Meta parameters unavailable ({self.priors.unavailable}): SESA's defaults "
                f"({settings})"
            )
        return f"Meta parameters v{self.priors.version}: {settings}"


def _evolution_detail(f: FinishedEvolution, config: EvolutionConfig) -> str:
    r = f.result
    head = (
        f"evolution {f.evolution_id} of {config.num_generations} generations on {f.symbol} "
        f"({f.sector}), {r.trials} trials: "
    )
    chosen = book_candidates(r)
    if not chosen:
        best = r.top[0] if r.top else None
        why = f" (best {best.genome_id}: {'; '.join(best.gate_failures)})" if best else ""
        return head + f"no candidate passed the gates out of sample{why}"
    found = ", ".join(
        f"{book_strategy_id(f.symbol, j.genome_id)} (Sharpe "
        f"{j.evaluation.out_of_sample.sharpe_ratio:.2f}, win rate "
        f"{j.evaluation.out_of_sample.win_rate:.0%}, "
        f"{j.evaluation.out_of_sample.trade_count} trades, {j.stage.name.lower()})"
        for j in chosen
    )
    text = head + f"{len(chosen)} candidates passed the gates out of sample: {found}"
    book = f.shadow_book
    if book is None:
        return text
    if not book.applied:
        return text + f"; the book kept this key's earlier addition (change {book.change_sequence})"
    return text + f"; sent to the book as shadows ({book.detail}, change {book.change_sequence})"


def _completed_hint(context: AgentContext) -> int | None:
    """The market time of the latest completed RUN_EVOLUTION, from the planning context's
    ``completed/run_evolution`` hint (federation/engine.py); None without a valid one."""
    try:
        return int(context.hints[COMPLETED_HINT])
    except (KeyError, ValueError):
        return None


@dataclasses.dataclass(eq=False)
class _Run:
    order: EvolutionOrder  # the order that started it
    task: asyncio.Task[EvolutionReport]
    answered: set[str] = dataclasses.field(default_factory=set)  # keys given its result


class SesaAgent:
    """Recommends running an evolution when there is none or the latest is a day old (the latest
    this replica ran, or the latest the federation saw complete on any replica; which
    ``review``, when given, may change: memory's, in :mod:`sesa.memory`), and executes
    RUN_EVOLUTION through ``run_evolution``, once per key (see the module)."""

    name = "sesa"

    def __init__(
        self,
        *,
        run_evolution: Callable[[EvolutionOrder], Awaitable[EvolutionReport]],
        check_order: Callable[[EvolutionOrder], Awaitable[None]],
        default_symbols: tuple[str, ...],
        stale_after_nanos: int = DAY_NANOS,
        remembered: int = 1000,
        review: Review | None = None,
        recorded: Callable[[str], Awaitable[Execution]] | None = None,
    ) -> None:
        self._run_evolution = run_evolution
        self._recorded = recorded
        self._check_order = check_order
        self._review = review
        self._default_symbols = default_symbols
        self._stale_after = stale_after_nanos
        self._remembered = remembered
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._one_at_a_time = asyncio.Lock()
        self.latest: FinishedEvolution | None = None

    def remember(self, finished: FinishedEvolution) -> None:
        self.latest = finished

    @property
    def running(self) -> bool:
        """Whether an evolution of an action runs or waits to."""
        return any(not run.task.done() for run in self._runs.values())

    def run_of(self, key: str) -> asyncio.Task[EvolutionReport] | None:
        """The evolution run for idempotency key ``key`` (done or not), if any."""
        run = self._runs.get(key)
        return run.task if run is not None else None

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        """An evolution when none ran yet or the latest is stale; with a ``review`` (memory's,
        :mod:`sesa.memory`), as what was recalled of similar past evolutions changes it."""
        recommendation = self._due(context)
        if recommendation is not None and self._review is not None:
            recommendation = await self._review(recommendation, context)
        return [recommendation] if recommendation is not None else []

    def _due(self, context: AgentContext) -> Recommendation | None:
        if self.running:
            return None  # its candidates go to the book when it finishes
        # This replica's latest evolution, or the federation's record of the latest completed
        # RUN_EVOLUTION (any replica's; kept across restarts), whichever is newer.
        finished = [t for t in (_completed_hint(context), self.latest) if t is not None]
        if not finished:
            return self._evolve("no evolution has run yet, so no candidate has been tested", 0.6)
        latest = max(t if isinstance(t, int) else t.finished_time for t in finished)
        age = context.as_of_time - latest
        if context.as_of_time and age >= self._stale_after:
            hours = age / 3.6e12
            return self._evolve(f"the latest evolution finished {hours:.0f} h ago", 0.7)
        return None

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        parameters = action.parameters
        if not isinstance(parameters, RunEvolution):
            raise InvalidArgument("action.type", f"sesa does not execute {action.action_type.name}")
        if not action.idempotency_key:
            raise InvalidArgument("action.idempotency_key", "must be set")
        order = EvolutionOrder(
            key=action.idempotency_key,
            action_id=action.id,
            plan_sequence=plan_sequence,
            symbols=tuple(parameters.symbols or self._default_symbols),
            generations=parameters.generations,
        )
        run = self._runs.get(order.key)
        if run is None and self._recorded is not None:
            # Finished before a restart: the key's evolutions do not run again.
            known = await self._recorded(order.key)
            if known.state is ExecutionState.APPLIED:
                return ExecutionResult(False, f"already ran: {known.detail}", known.outcome)
        if run is None:
            await self._check_order(order)  # a bad order fails now, not after a wait
            run = self._runs.get(order.key) or self._joinable(order) or self._start(order)
            self._runs[order.key] = run
            self._trim()
        # A cancelled call (a timed-out attempt) leaves the evolution running for the retry.
        report = await asyncio.shield(run.task)
        first = order.key not in run.answered
        run.answered.add(order.key)
        detail = report.detail()
        if order.key != run.order.key:
            detail = f"joined the evolution asked for by {run.order.key}: {detail}"
        if not first:
            detail = f"already ran: {detail}"
        return ExecutionResult(first, detail, report.outcome())

    async def execution(self, idempotency_key: str) -> Execution:
        """A run of the key under way or done here, else what ``recorded`` (the evolution log)
        kept of it: a key whose evolutions were interrupted was not applied, and runs again."""
        run = self._runs.get(idempotency_key)
        if run is not None and not run.task.done():
            return Execution(ExecutionState.RUNNING)
        if run is not None and not run.task.cancelled() and run.task.exception() is None:
            report = run.task.result()
            return Execution(ExecutionState.APPLIED, report.detail(), report.outcome())
        if self._recorded is not None:
            return await self._recorded(idempotency_key)
        return NOT_APPLIED

    def _joinable(self, order: EvolutionOrder) -> _Run | None:
        for run in self._runs.values():
            same = (run.order.symbols, run.order.generations) == (order.symbols, order.generations)
            if same and not run.task.done():
                return run
        return None

    def _start(self, order: EvolutionOrder) -> _Run:
        async def one_at_a_time() -> EvolutionReport:
            async with self._one_at_a_time:
                return await self._run_evolution(order)

        run = _Run(order, asyncio.ensure_future(one_at_a_time()))
        run.task.add_done_callback(lambda _task: self._finished(run))
        return run

    def _finished(self, run: _Run) -> None:
        if run.task.cancelled():
            self._forget(run)
            return
        failure = run.task.exception()  # retrieved here, so an unawaited failure is not lost
        if failure is not None:
            _log.warning("evolution failed", key=run.order.key, error=repr(failure))
            self._forget(run)  # a key whose run failed may run again

    def _forget(self, run: _Run) -> None:
        for key in [k for k, r in self._runs.items() if r is run]:
            del self._runs[key]

    def _trim(self) -> None:
        done = [k for k, r in self._runs.items() if r.task.done()]
        for key in done[: max(len(self._runs) - self._remembered, 0)]:
            del self._runs[key]

    async def close(self) -> None:
        """Cancels the evolutions still running and waits for them to stop."""
        tasks = {run.task for run in self._runs.values() if not run.task.done()}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _evolve(self, reason: str, confidence: float) -> Recommendation:
        return Recommendation(
            id="run-evolution",
            priority=Priority.LOW,
            target="sesa/evolution",
            parameters=RunEvolution(symbols=self._default_symbols),
            confidence=confidence,
            rationale=f"Run a SESA evolution on {', '.join(self._default_symbols)}: {reason}.",
        )
