"""The risk officer as an agent: the fleet's risk kept fresh in the background, recommendations
read from it, and the risk limits it owns. The kill switch is the market fleet's: the officer
recommends HALT_TRADING and RESUME_TRADING, reads the halts from the fleet, and forwards an
operator's ResumeTrading to the fleet as an action.

The report and the recommendations are recomputed whenever the market's clock completes a period
(one hour by default), when AssessRisk asks for the fleet's report, and after every change of the
limits; Recommend only reads them and never waits for the market. When the
planning context shows a market position the cache has not seen, Recommend starts a refresh for
the next cycle and answers with what it has.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence

import structlog

from agents.officer import Market, Officer
from agents.policy_log import OwnedPolicy
from agents.risk.advice import recommend
from agents.risk.assessment import RiskInputs, RiskReport, assess, caller_inputs
from agents.risk.config import RiskConfig
from agents.risk.limits import PORTFOLIO, Halt, RiskPolicy, fleet_halts
from qtmesh.base.concurrency import run_cancellable
from qtmesh.base.contract import (
    Action,
    ActionType,
    AdjustRiskLimits,
    Agent,
    Priority,
    Recommendation,
    ResumeTrading,
)
from qtmesh.base.errors import InvalidArgument, MeshError

EXECUTES = (ActionType.ADJUST_RISK_LIMITS,)
MAX_REASON = 500
_log = structlog.get_logger("agents.risk")


class RiskOfficer(Officer[RiskPolicy]):
    """Implements :class:`~qtmesh.base.contract.Agent` plus AssessRisk, limits and the kill
    switch."""

    name = "risk"

    def __init__(
        self,
        *,
        market: Market,
        policy: OwnedPolicy[RiskPolicy],
        config: RiskConfig,
        fleet: Agent | None = None,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """``fleet`` executes an operator's resume (the market's AgentService)."""
        super().__init__(market=market, policy=policy, periods=config, wall_clock=wall_clock)
        self._fleet = fleet
        self._config = config
        self._settings = config.settings
        self._report: RiskReport | None = None
        self._recommendations_now: tuple[Recommendation, ...] = ()

    @property
    def policy(self) -> RiskPolicy:
        return self._policy.value

    @property
    def halts(self) -> tuple[Halt, ...]:
        """The fleet's halts as last read (only reads what the last refresh left: safe from any
        thread)."""
        history = self._sampler.history
        return fleet_halts(history.current) if history is not None else ()

    async def current_halts(self) -> tuple[Halt, ...]:
        """The fleet's halts now: the market is read first (a halt it executed since the last
        refresh is shown at once); as last read if it cannot be reached."""
        with contextlib.suppress(MeshError):
            await self._refresher.fresh()
        return self.halts

    # -- the fleet's risk ------------------------------------------------------------------

    async def _refresh(self) -> None:
        await self._sampler.update()
        self._recompute()

    def _recompute(self) -> None:
        history = self._sampler.history
        if history is None:
            return
        inputs = RiskInputs.of_fleet(history, self._config.lookback_periods)
        self._report = assess(inputs, self.policy, self._settings, halts=self.halts)
        self._recommendations_now = tuple(recommend(self._report, self._settings))

    async def assess(
        self, returns: Mapping[str, tuple[Sequence[float], float]] | None = None
    ) -> RiskReport:
        """The fleet's report as of the market's clock now, or the report of the caller's
        ``sector -> (returns, exposure)`` under the current limits."""
        if not returns:
            await self._refresher.fresh()
            assert self._report is not None
            return self._report
        sectors = await self._sectors()
        inputs = caller_inputs(
            returns,
            sectors=sectors,
            minimum=self._config.min_observations,
            maximum=self._config.max_observations,
            max_sectors=self._config.max_sectors,
        )
        policy, settings, halts = self.policy, self._settings, self.halts
        return await run_cancellable(
            lambda token: assess(inputs, policy, settings, halts=halts, token=token)
        )

    async def _sectors(self) -> Collection[str] | None:
        """The market's sectors, reading the market once if it was never read; None if it
        cannot be reached."""
        if self._sampler.history is None:
            with contextlib.suppress(Exception):
                await self._refresher.fresh()
        history = self._sampler.history
        return history.sectors if history is not None else None

    # -- the agent -------------------------------------------------------------------------

    def _computed_position(self) -> int | None:
        return self._report.market_position if self._report is not None else None

    def _recommendations(self) -> list[Recommendation]:
        return list(self._recommendations_now)

    async def _policy_update(
        self, action: Action, plan_sequence: int
    ) -> tuple[Callable[[RiskPolicy], tuple[RiskPolicy, str]], int]:
        sectors = await self._sectors()
        at = self._market_time()
        match action.parameters:
            case AdjustRiskLimits(limits=limits):

                def update(policy: RiskPolicy) -> tuple[RiskPolicy, str]:
                    return policy.with_limits(
                        limits, sectors=sectors, field="action.parameters.adjust_risk_limits.limits"
                    )

            case _:
                raise InvalidArgument(
                    "action.type",
                    "the risk officer executes ADJUST_RISK_LIMITS (the market's fleet executes "
                    "HALT_TRADING and RESUME_TRADING)",
                )
        return update, at

    async def resume(self, scope: str, reason: str) -> bool:
        """Releases the fleet's kill switch on ``scope`` (an operator's call): a RESUME_TRADING
        action executed by the fleet at once. False if the scope was not halted."""
        if not scope:
            raise InvalidArgument("scope", "must be 'portfolio' or a halted sector")
        if not reason.strip():
            raise InvalidArgument("reason", "must say why trading may resume")
        if len(reason) > MAX_REASON:
            raise InvalidArgument("reason", f"at most {MAX_REASON} characters")
        await self._refresher.fresh()
        if scope not in {h.scope for h in self.halts}:
            return False
        if self._fleet is None:
            raise InvalidArgument("scope", "this risk officer has no fleet to resume")
        action = Action(
            id=f"operator-resume-{uuid.uuid4().hex[:12]}",
            priority=Priority.HIGH,
            target=PORTFOLIO if scope == PORTFOLIO else f"sector/{scope}",
            parameters=ResumeTrading(scope=scope),
            confidence=1.0,
            rationale=f"operator: {reason}",
            source_agents=("operator",),
            owner="market",
            idempotency_key=f"operator/resume/{uuid.uuid4().hex}",
        )
        result = await self._fleet.execute(action, plan_sequence=0)
        # The fleet's change names the action; the operator's reason is kept here.
        _log.info(
            "operator resume",
            scope=scope,
            reason=reason,
            action_id=action.id,
            detail=result.detail,
        )
        await self._refresher.fresh()
        return True
