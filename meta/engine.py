"""The meta service's state machine: the OS, the policy and the tuner over one store.

It assembles the state the policy decides on from what the store holds (the trade window, the
evaluations seen, the trial log), the regime changes the world model reported (in memory:
:mod:`meta.regimes`) and what a caller adds, runs meta updates, applies tuning actions, and
tells watchers when a new parameter version exists. Writes are serialised by one
lock and each is one transaction, so nothing is half-applied. No gRPC here; the clock is
injected (Unix nanoseconds) and only read when a request does not carry its own time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from meta.config import MetaLearningConfig, MetaPolicyRules
from meta.learning import MetaLearningOS, Tracked, summarize
from meta.model import (
    NANOS_PER_DAY,
    SCALARS,
    CallerState,
    Evaluation,
    MetaDecision,
    MetaParameters,
    MetaState,
    MutationProposal,
    ParameterChange,
    ShadowCandidate,
    Trade,
    changes_between,
    validate_caller_state,
    validate_evaluations,
    validate_state,
    validate_trades,
)
from meta.policy import MetaPolicy
from meta.regimes import RegimeChanges
from meta.store import (
    Credit,
    MetaStore,
    SequenceCursor,
    StoredContext,
    StreamCursor,
    VersionRecord,
    Write,
)
from meta.tuning import MutationTuner, Score, Trial, trial_at
from qtmesh.base.config import ConfigError
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.signal import ChangeSignal

Clock = Callable[[], int]


@dataclasses.dataclass(frozen=True)
class UpdateResult:
    parameters: MetaParameters
    changes: tuple[ParameterChange, ...]
    decisions: tuple[MetaDecision, ...]
    adapted: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class TuneResult:
    applied: bool
    detail: str
    parameters: MetaParameters


@dataclasses.dataclass(frozen=True)
class TrialLog:
    trials: tuple[Trial, ...]
    total_trials: int
    total_evaluations: int


class MetaEngine:
    def __init__(
        self,
        *,
        store: MetaStore,
        learning: MetaLearningConfig,
        rules: MetaPolicyRules,
        clock: Clock,
    ) -> None:
        self.store = store
        self.learning = learning
        self.rules = rules
        self.os = MetaLearningOS(config=learning)
        self.policy = MetaPolicy(rules)
        self.tuner = MutationTuner.from_config(learning)
        self.clock = clock
        self.signal = ChangeSignal()
        # Regime changes the world model reported (meta/regimes.py), in memory.
        self.regimes = RegimeChanges()
        self._lock = asyncio.Lock()
        self._current: VersionRecord | None = None

    async def start(self) -> None:
        """Loads the latest version; seeds version 1 (and trial 1) in an empty store, and clips
        stored parameters into bounds a configuration change may have narrowed."""
        latest = await self.store.run(self.store.latest)
        if latest is None:
            seed = VersionRecord(self.os.initial_parameters(), (), Tracked())
            trial = Trial(index=1, setting=seed.parameters.mutation, start_time=0)
            await self.store.run(self.store.write, Write(version=seed, trial=trial))
            latest = seed
        clipped = self.os.clip(latest.parameters)
        if clipped != latest.parameters:
            reason = "clipped into the configured bounds"
            record = VersionRecord(
                dataclasses.replace(
                    clipped, version=latest.version + 1, cause="configuration bounds"
                ),
                changes_between(latest.parameters, clipped, dict.fromkeys(SCALARS, reason)),
                latest.tracked,
            )
            await self.store.run(self.store.write, Write(version=record))
            latest = record
        self._current = latest

    @property
    def current(self) -> VersionRecord:
        if self._current is None:
            raise RuntimeError("MetaEngine.start() was not awaited")
        return self._current

    @property
    def parameters(self) -> MetaParameters:
        return self.current.parameters

    def now(self, requested: int | None) -> int:
        return requested if requested else self.clock()

    # -- meta update ------------------------------------------------------------------------------

    async def update(
        self,
        trades: Sequence[Trade],
        evaluations: Sequence[Evaluation],
        *,
        now: int | None = None,
        caller: CallerState | None = None,
        cause: str = "meta update",
        cursor: StreamCursor | SequenceCursor | None = None,
    ) -> UpdateResult:
        """Records the trades and evaluations, adapts the parameters when due and enough trades
        are in the window (a new version names ``cause``), and runs the policy on the resulting
        state. ``cursor``, a followed stream's position after ``trades``, is stored with them."""
        at = self.now(now)
        caller = caller or CallerState()
        async with self._lock:
            current = self.current
            retrained = current.parameters.retrain_requested_time
            if self.regimes.for_update(at, retrained_at=retrained):
                caller = dataclasses.replace(caller, regime_changed=True)
            # Validation and the window statistics are O(trades): off the event loop, like the
            # store's work, so a large update does not stall other calls.
            await asyncio.to_thread(self._validate_update, trades, evaluations, caller, at)
            stored = await self._read(at, trades, evaluations)
            result, write = await asyncio.to_thread(
                self._plan_update, current, stored, trades, evaluations, caller, at, cause
            )
            if cursor is not None:
                write = dataclasses.replace(write, cursor=cursor)
            await self.store.run(self.store.write, write)
            self.regimes.updated(at)
            if write.version is not None:
                self._current = write.version
                self.signal.notify()
        return result

    @staticmethod
    def _validate_update(
        trades: Sequence[Trade],
        evaluations: Sequence[Evaluation],
        caller: CallerState,
        at: int,
    ) -> None:
        validate_trades(trades, now=at)
        validate_evaluations(evaluations, now=at)
        validate_caller_state(caller, now=at)

    def _plan_update(
        self,
        current: VersionRecord,
        stored: StoredContext,
        trades: Sequence[Trade],
        evaluations: Sequence[Evaluation],
        caller: CallerState,
        at: int,
        cause: str = "meta update",
    ) -> tuple[UpdateResult, Write]:
        """What an update returns and writes; pure given what the store held."""
        new_trades = [t for t in trades if t.key not in stored.existing_trade_keys]
        new_evaluations = [
            e
            for e in evaluations
            if (e.strategy_id, e.evaluated_time) not in stored.existing_evaluation_keys
        ]
        window_start = at - self.learning.window_nanos
        window = stored.window_trades + [t for t in new_trades if window_start < t.exit_time <= at]
        families = dict(stored.families)
        for e in sorted(new_evaluations, key=lambda e: e.evaluated_time):
            if e.family is not None:
                families[e.strategy_id] = e.family.name
        stats = summarize(
            window, now=at, window_hours=self.learning.performance_window_hours, families=families
        )
        adaptation = self.os.adapt(
            current.parameters, current.tracked, stats, evaluations, now=at, cause=cause
        )
        credits = self._credits(stored, new_evaluations)
        state = self._state(
            at,
            adaptation.parameters,
            stats_performance=stats.sharpe,
            sample_count=stats.count,
            streak=stats.streak,
            baseline=current.tracked.baseline_performance,
            evolved=adaptation.tracked.last_evolution_time,
            stored=stored,
            new_evaluations=new_evaluations,
            credits=credits,
            caller=caller,
        )
        record = None
        if adaptation.adapted:
            record = VersionRecord(adaptation.parameters, adaptation.changes, adaptation.tracked)
        result = UpdateResult(
            adaptation.parameters,
            adaptation.changes,
            self.policy.decide(state),
            adaptation.adapted,
            adaptation.detail,
        )
        write = Write(
            trades=new_trades,
            evaluations=new_evaluations,
            credits=credits,
            version=record,
            # Trades that left the window never count again (the clock moves forward).
            prune_trades_before=window_start,
        )
        return result, write

    def due(self, now: int) -> bool:
        """Whether an update at ``now`` may adapt (the interval since the last one has passed);
        the window must still hold enough trades."""
        return self.os.due(self.current.tracked, now)

    async def stream_cursor(self, stream: str) -> StreamCursor | None:
        """Where the followed ``stream`` stands: its last trade counted."""
        return await self.store.run(self.store.stream_cursor, stream)

    async def sequence_cursor(self, stream: str) -> SequenceCursor | None:
        """Where the followed ``stream`` of numbered events stands: its last event counted."""
        return await self.store.run(self.store.sequence_cursor, stream)

    def note_regime_change(self, at: int) -> bool:
        """Records that the market's regime changed at market time ``at`` (the world model's
        WatchRegimes, followed by :mod:`meta.regimes`, whose rules say which updates and
        decisions see it); False for a change no later than the latest one recorded."""
        return self.regimes.note(at)

    # -- decisions ---------------------------------------------------------------------------------

    def decide(
        self, state: MetaState, rule_overrides: Mapping[str, float] | None = None
    ) -> tuple[MetaDecision, ...]:
        """The policy on a caller's state, optionally under other rule settings (what-if)."""
        validate_state(state)
        policy = self.policy
        if rule_overrides:
            policy = MetaPolicy(override_rules(self.rules, rule_overrides))
        return policy.decide(state)

    async def decisions_at(
        self, now: int | None = None, caller: CallerState | None = None
    ) -> tuple[MetaDecision, ...]:
        """The policy on the state the service measures at ``now`` (read-only)."""
        at = self.now(now)
        caller = caller or CallerState()
        validate_caller_state(caller, now=at)
        async with self._lock:
            current = self.current
            stored = await self._read(at, (), ())
        retrained = current.parameters.retrain_requested_time
        if self.regimes.for_decisions(at, retrained_at=retrained):
            caller = dataclasses.replace(caller, regime_changed=True)
        stats = await asyncio.to_thread(
            summarize,
            stored.window_trades,
            now=at,
            window_hours=self.learning.performance_window_hours,
            families=stored.families,
        )
        state = self._state(
            at,
            current.parameters,
            stats_performance=stats.sharpe,
            sample_count=stats.count,
            streak=stats.streak,
            baseline=current.tracked.baseline_performance,
            evolved=current.tracked.last_evolution_time,
            stored=stored,
            new_evaluations=(),
            credits=(),
            caller=caller,
        )
        return self.policy.decide(state)

    # -- tuning actions ----------------------------------------------------------------------------

    async def record_evolution(
        self, at: int, *, cause: str = "an evolution the federation completed"
    ) -> None:
        """Records that a SESA evolution completed at ``at`` (market time), which restarts the
        evolution interval; a time no later than the one on record changes nothing."""
        if at <= (self.current.tracked.last_evolution_time or 0):
            return
        await self.tune(
            {},
            evolution_ran=True,
            action_key=f"evolution-completed/{at}",
            cause=cause,
            now=at,
        )

    async def tune(
        self,
        values: Mapping[str, float],
        *,
        retrain_models: bool = False,
        evolution_ran: bool = False,
        action_key: str = "",
        cause: str,
        now: int | None = None,
        field: str = "parameters",
    ) -> TuneResult:
        """Sets scalar parameters (each within its bounds); with ``retrain_models`` records a
        retraining request and with ``evolution_ran`` that a SESA evolution ran, both at ``now``
        (the market clock the decisions were made on). An ``action_key`` already applied is not
        applied again."""
        at = self.now(now)
        bounds = self.os.bounds()
        for name, value in sorted(values.items()):
            where = f"{field}[{name}]"
            if name not in bounds:
                raise InvalidArgument(where, f"is not a tunable parameter ({', '.join(SCALARS)})")
            low, high = bounds[name]
            if not (math.isfinite(value) and low <= value <= high):
                raise InvalidArgument(where, f"{value} is outside {low:g}..{high:g}")
        async with self._lock:
            if action_key:
                seen = await self.store.run(self.store.version_of_action, action_key)
                if seen is not None:
                    return TuneResult(
                        False, f"already applied as version {seen.version}", self.parameters
                    )
            current = self.current
            changed = dataclasses.replace(
                current.parameters,
                **dict[str, Any](values),
                retrain_requested_time=at
                if retrain_models
                else current.parameters.retrain_requested_time,
            )
            tracked = current.tracked
            if evolution_ran:
                tracked = dataclasses.replace(
                    tracked, last_evolution_time=_latest(tracked.last_evolution_time, at)
                )
            if changed == current.parameters and tracked == current.tracked:
                return TuneResult(True, "no change: the values are already current", changed)
            new = dataclasses.replace(
                changed, version=current.version + 1, update_time=at, cause=cause
            )
            reasons = dict.fromkeys(SCALARS, f"set by {cause}")
            changes = changes_between(current.parameters, new, reasons)
            record = VersionRecord(new, changes, tracked, action_key or None)
            trial = None
            if new.mutation != current.parameters.mutation:
                tried, _ = await self.store.run(self.store.trial_totals)
                trial = Trial(index=tried + 1, setting=new.mutation, start_time=at)
            await self.store.run(self.store.write, Write(version=record, trial=trial))
            self._current = record
            self.signal.notify()
        moved = describe_changes(changes)
        if retrain_models:
            moved = "; ".join(filter(None, [moved, "RL retraining requested"]))
        if evolution_ran:
            moved = "; ".join(filter(None, [moved, "SESA evolution recorded"]))
        return TuneResult(True, f"version {new.version}: {moved}{_reaches(changes)}", new)

    # -- reads -----------------------------------------------------------------------------------

    async def history(self, after_version: int, limit: int = 100) -> list[VersionRecord]:
        return await self.store.run(self.store.history, after_version, limit)

    async def trial_log(self, *, offset: int, limit: int) -> TrialLog:
        def read() -> TrialLog:
            total, genomes = self.store.trial_totals()
            return TrialLog(tuple(self.store.trials(offset=offset, limit=limit)), total, genomes)

        return await self.store.run(read)

    # -- internals ---------------------------------------------------------------------------------

    async def _read(
        self, at: int, trades: Sequence[Trade], evaluations: Sequence[Evaluation]
    ) -> StoredContext:
        return await self.store.run(
            lambda: self.store.read_context(
                window_start=at - self.learning.window_nanos,
                now=at,
                scores_since=at - self.tuner.window_nanos,
                incoming_trades=trades,
                incoming_evaluations=evaluations,
            )
        )

    def _credits(self, stored: StoredContext, new: Sequence[Evaluation]) -> list[Credit]:
        """Each offspring genome not credited before, to the trial in use when evaluated."""
        credits: dict[str, Credit] = {}
        for e in sorted(new, key=lambda e: (e.evaluated_time, e.strategy_id)):
            if (
                e.is_offspring
                and e.strategy_id not in stored.credited
                and e.strategy_id not in credits
            ):
                trial = trial_at(stored.trials, e.evaluated_time)
                credits[e.strategy_id] = Credit(
                    e.strategy_id, trial.index, e.composite_score, e.evaluated_time
                )
        return list(credits.values())

    def _state(
        self,
        at: int,
        parameters: MetaParameters,
        *,
        stats_performance: float,
        sample_count: int,
        streak: int,
        baseline: float | None,
        evolved: int | None,
        stored: StoredContext,
        new_evaluations: Sequence[Evaluation],
        credits: Sequence[Credit],
        caller: CallerState,
    ) -> MetaState:
        offspring_times = [e.evaluated_time for e in new_evaluations if e.is_offspring]
        last_evolution = _latest(
            stored.last_offspring_time, *offspring_times, caller.last_evolution_time, evolved
        )
        last_retrain = _latest(parameters.retrain_requested_time or None, caller.last_retrain_time)
        candidates = caller.shadow_candidates
        if candidates is None:
            candidates = self._shadow_candidates(at, stored, new_evaluations)
        return MetaState(
            now=at,
            last_evolution_time=last_evolution,
            last_retrain_time=last_retrain,
            performance=stats_performance,
            baseline_performance=baseline or 0.0,
            target_performance=caller.target_performance or None,
            regime_changed=caller.regime_changed,
            shadow_candidates=candidates,
            streak=streak,
            exploration_rate=parameters.rl_exploration_rate,
            risk_multiplier=parameters.risk_multiplier,
            sample_count=sample_count,
            strategy_weights=caller.strategy_weights,
            proposed_strategy_weights=parameters.strategy_weights,
            mutation=self._proposal(at, parameters, stored, credits),
        )

    def _proposal(
        self,
        at: int,
        parameters: MetaParameters,
        stored: StoredContext,
        credits: Sequence[Credit],
    ) -> MutationProposal | None:
        by_index = {t.index: t for t in stored.trials}
        scores = list(stored.recent_scores)
        for credit in credits:
            trial = by_index[credit.trial_index]
            by_index[credit.trial_index] = dataclasses.replace(
                trial,
                evaluation_count=trial.evaluation_count + 1,
                score_sum=trial.score_sum + credit.score,
            )
            scores.append(Score(trial.setting, credit.score, credit.evaluated_time))
        running = by_index[max(by_index)]
        if running.setting != parameters.mutation:
            return None
        return self.tuner.propose(running=running, scores=scores, now=at)

    def _shadow_candidates(
        self, at: int, stored: StoredContext, new: Sequence[Evaluation]
    ) -> tuple[ShadowCandidate, ...]:
        """Strategies whose latest evaluation has them in shadow test; days count from the
        first evaluation that had them there."""
        latest = dict(stored.shadow_latest)
        first = dict(stored.first_shadow_time)
        for e in sorted(new, key=lambda e: e.evaluated_time):
            if (
                e.strategy_id not in latest
                or latest[e.strategy_id].evaluated_time < e.evaluated_time
            ):
                latest[e.strategy_id] = e
            if e.stage is not None and e.stage.name == "SHADOW":
                first[e.strategy_id] = min(
                    first.get(e.strategy_id, e.evaluated_time), e.evaluated_time
                )
        return tuple(
            ShadowCandidate(
                strategy_id=sid,
                days_in_test=max(0, at - first.get(sid, e.evaluated_time)) / NANOS_PER_DAY,
                trade_count=e.trade_count,
                sharpe_ratio=e.sharpe_ratio,
                deflated_sharpe_ratio=e.deflated_sharpe_ratio,
            )
            for sid, e in sorted(latest.items())
            if e.stage is not None and e.stage.name == "SHADOW"
        )


def override_rules(rules: MetaPolicyRules, overrides: Mapping[str, float]) -> MetaPolicyRules:
    """``rules`` with some settings replaced; a bad name or value is InvalidArgument."""
    fields = {f.name: f for f in dataclasses.fields(MetaPolicyRules)}
    values: dict[str, Any] = {}
    for name, value in sorted(overrides.items()):
        where = f"rule_overrides[{name}]"
        if name not in fields:
            raise InvalidArgument(where, "is not a meta policy setting")
        kind = type(getattr(rules, name))
        if kind in (int, bool):
            if not (math.isfinite(value) and value == int(value)):
                raise InvalidArgument(where, f"{value} is not a whole number")
            if kind is bool and value not in (0, 1):
                raise InvalidArgument(where, f"{value} is not 0 (false) or 1 (true)")
            values[name] = kind(int(value))
        else:
            values[name] = value
    try:
        return dataclasses.replace(rules, **values)
    except ConfigError as exc:
        raise InvalidArgument(f"rule_overrides[{exc.setting}]", exc.problem) from None


def _latest(*times: int | None) -> int | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


# Where each tuned parameter is read (see meta/fleet_scale.py and SESA's RUN_EVOLUTION).
_READ_BY = {
    "risk_multiplier": "the fleet's position scale, from its next bar",
    "position_size_scale": "the fleet's position scale, from its next bar",
    "sesa_mutation_rate": "SESA's next evolution",
    "sesa_mutation_magnitude": "SESA's next evolution",
    "rl_learning_rate": "the Q-learning priors of SESA's next evolution",
    "rl_exploration_rate": "the Q-learning priors of SESA's next evolution",
    "rl_discount": "the Q-learning priors of SESA's next evolution",
}


def describe_changes(changes: Sequence[ParameterChange]) -> str:
    """What a version changed, as an executed TUNE_LEARNING's detail says it."""
    return "; ".join(f"{c.name} {c.old_value:.4g} -> {c.new_value:.4g}" for c in changes)


def _reaches(changes: Sequence[ParameterChange]) -> str:
    """Who reads what changed: an executed action says what it changes downstream."""
    readers = sorted({_READ_BY[c.name] for c in changes if c.name in _READ_BY})
    return f" (read by {', '.join(readers)})" if readers else ""
