"""The CEO as an agent: one evaluation per completed period of the market, the strategic mode it
owns, and a HIGH-priority mode switch when the hysteresis-filtered mode differs from it.

Evaluations run in the background whenever the market's clock completes a period (and when
GetMode asks), so Recommend only reads the last one. Each refresh reads the fleet's new periods
and the world model's regime of every sector, once, under ``regime_timeout_seconds``; when the
world model does not answer, the CEO decides without the regime and says so in the rationale.
Every completed period is evaluated in order, so the hysteresis counts periods, not calls. At
start-up the last ``confirmations`` periods are evaluated, which rebuilds the pending switch a
restart forgot. A recommended switch carries the market time of the data its evaluation rests on
(``as_of_time``: the period's end, or the oldest sector regime if older), so an evaluation the
CEO could not refresh shows its age to the federation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import structlog

from agents.ceo.config import CeoConfig
from agents.ceo.inputs import Regime, fleet_inputs, regime_of
from agents.ceo.mode import Evaluation, ModeEvaluator, ModeState
from agents.fleet_history import FleetHistory
from agents.officer import Market, Officer
from agents.policy_log import OwnedPolicy
from qtmesh.base.bars import format_time
from qtmesh.base.contract import (
    Action,
    ActionType,
    Priority,
    Recommendation,
    StrategicMode,
    SwitchMode,
)
from qtmesh.base.errors import InvalidArgument, MeshError
from world_model.regimes import RegimeReport

EXECUTES = (ActionType.SWITCH_MODE,)
_log = structlog.get_logger("agents.ceo")


class Regimes(Protocol):
    """What the CEO reads from the world model (implemented by WorldModelClient)."""

    async def detect_regime(
        self, *, symbol: str = "", sector: str = "", lookback: int = 0
    ) -> RegimeReport: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModeReport:
    """What GetMode answers: the mode in force and the last evaluation."""

    mode: StrategicMode
    since: int
    rationale: str
    inputs: Mapping[str, float]
    indicated: StrategicMode | None
    score: float
    target: StrategicMode
    confirmations: int
    evaluated_time: int
    missing: tuple[str, ...]


class Ceo(Officer[ModeState]):
    """Implements :class:`~qtmesh.base.contract.Agent` plus GetMode."""

    name = "ceo"

    def __init__(
        self,
        *,
        market: Market,
        regimes: Regimes | None,
        mode: OwnedPolicy[ModeState],
        config: CeoConfig,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(market=market, policy=mode, periods=config, wall_clock=wall_clock)
        self._regimes = regimes
        self._config = config
        self._evaluator = ModeEvaluator(config.rule, config.hysteresis)
        self._evaluated_until: int | None = None  # end time of the last period evaluated

    @property
    def mode(self) -> ModeState:
        return self._policy.value

    @property
    def last(self) -> Evaluation | None:
        return self._evaluator.last

    # -- evaluations -----------------------------------------------------------------------

    async def _refresh(self) -> None:
        history = await self._sampler.update()
        n = history.observations
        if n == 0:
            return
        ends = history.end_times
        new: Sequence[int]
        if self._evaluated_until is None or ends[-1] < self._evaluated_until:
            new = range(max(0, n - self._config.confirmations), n)  # first or restarted market
        else:
            new = [k for k in range(n) if ends[k] > self._evaluated_until]
        if not new:
            return
        regime, note = await self._regime(history)
        for k in new:
            inputs = fleet_inputs(
                history,
                k,
                lookback=self._config.lookback_periods,
                min_observations=self._config.min_observations,
            )
            short = ""
            if inputs.volatility is None:
                short = (
                    f" Volatility and trend need {self._config.min_observations} period returns; "
                    f"there are {inputs.observations}."
                )
            self._evaluator.evaluate(
                dataclasses.replace(inputs, regime=regime),
                self._policy.value.mode,
                note=(note + short).strip(),
            )
        self._evaluated_until = int(ends[-1])
        last = self._evaluator.last
        if last is not None:
            _log.info(
                "mode evaluated",
                score=round(last.score, 3),
                indicated=last.indicated.name,
                target=last.target.name,
                mode=last.current.name,
            )

    async def _regime(self, history: FleetHistory) -> tuple[Regime | None, str]:
        if self._regimes is None:
            return None, "No regime: no world model is configured; its weight went elsewhere."
        if not history.sectors:
            return None, "No regime: the fleet has no sectors; its weight went elsewhere."
        regimes = self._regimes
        try:
            async with asyncio.timeout(self._config.regime_timeout_seconds):
                # Every call is awaited (and cancelled together on the deadline), so one
                # sector's failure neither hides the others' outcome nor leaves calls running.
                answers = await asyncio.gather(
                    *(regimes.detect_regime(sector=s) for s in history.sectors),
                    return_exceptions=True,
                )
        except TimeoutError:
            return None, (
                f"No regime: the world model did not answer (no answer within "
                f"{self._config.regime_timeout_seconds:g} s); its weight went to the other inputs."
            )
        failed = {
            s: a
            for s, a in zip(history.sectors, answers, strict=True)
            if isinstance(a, BaseException)
        }
        for answer in failed.values():
            if not isinstance(answer, MeshError):
                raise answer  # a bug, not an unreachable world model
        if failed:
            why = "; ".join(f"{s}: {a}" for s, a in failed.items())
            return None, (
                f"No regime: the world model did not answer ({why}); its weight went to the "
                "other inputs."
            )
        reports = [a for a in answers if not isinstance(a, BaseException)]
        allocations = {s.sector: s.allocation for s in history.current.sectors}
        return regime_of(dict(zip(history.sectors, reports, strict=True)), allocations), ""

    async def report(self) -> ModeReport:
        """The mode and the evaluation of the last completed period (refreshed first; if the
        market cannot be reached, the last evaluation there is)."""
        with contextlib.suppress(MeshError):
            await self._refresher.fresh()
        state, last = self._policy.value, self._evaluator.last
        since = format_time(state.since) if state.since else "start-up"
        rationale = f"{state.mode.name} since {since} ({state.cause})."
        if last is None:
            return ModeReport(
                mode=state.mode,
                since=state.since,
                rationale=rationale + " No evaluation yet: no period of the fleet has completed.",
                inputs={},
                indicated=None,
                score=0.0,
                target=state.mode,
                confirmations=0,
                evaluated_time=0,
                missing=(),
            )
        return ModeReport(
            mode=state.mode,
            since=state.since,
            rationale=f"{rationale} Last evaluation: {last.rationale}",
            inputs=last.evidence(),
            indicated=last.indicated,
            score=last.score,
            target=self._target(last) or state.mode,
            confirmations=last.confirmations,
            evaluated_time=last.inputs.time,
            missing=last.inputs.missing(),
        )

    def _target(self, last: Evaluation) -> StrategicMode | None:
        """The mode to switch to, if the last evaluation calls for one against the mode now."""
        current = self._policy.value.mode
        if last.current is not current or last.target is current:
            return None  # no switch called for, or one was executed since
        return last.target

    # -- the agent -------------------------------------------------------------------------

    def _recommendations(self) -> list[Recommendation]:
        last = self._evaluator.last
        target = self._target(last) if last is not None else None
        if last is None or target is None:
            return []
        return [
            Recommendation(
                id="ceo/mode",
                priority=Priority.HIGH,
                target="mode",
                parameters=SwitchMode(mode=target),
                confidence=last.confidence,
                rationale=last.rationale,
                evidence=last.evidence(),
                as_of_time=last.inputs.as_of_time,
            )
        ]

    async def _policy_update(
        self, action: Action, plan_sequence: int
    ) -> tuple[Callable[[ModeState], tuple[ModeState, str]], int]:
        if not isinstance(action.parameters, SwitchMode):
            raise InvalidArgument("action.type", "the CEO executes only SWITCH_MODE")
        at = self._market_time()
        mode = action.parameters.mode
        cause = f"action {action.id} of plan {plan_sequence}"
        return (lambda state: state.switched(mode, at=at, cause=cause)), at
