"""The risk officer as an agent: the fleet's risk kept fresh in the background, recommendations
read from it, and the risk limits and kill switch it owns.

The report and the recommendations are recomputed whenever the market's clock completes a period
(one hour by default), when AssessRisk asks for the fleet's report, and after every change of the
limits or the kill switch; Recommend only reads them and never waits for the market. When the
planning context shows a market position the cache has not seen, Recommend starts a refresh for
the next cycle and answers with what it has.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from agents.officer import Market, Officer
from agents.policy_log import OwnedPolicy
from agents.risk.advice import recommend
from agents.risk.assessment import RiskInputs, RiskReport, assess, caller_inputs
from agents.risk.config import RiskConfig
from agents.risk.limits import PORTFOLIO, Halt, RiskPolicy
from qtmesh.base.concurrency import run_cancellable
from qtmesh.base.contract import (
    Action,
    ActionType,
    AdjustRiskLimits,
    HaltTrading,
    Recommendation,
)
from qtmesh.base.errors import FailedPrecondition, InvalidArgument

EXECUTES = (ActionType.HALT_TRADING, ActionType.ADJUST_RISK_LIMITS)
MAX_REASON = 500


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
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(market=market, policy=policy, periods=config, wall_clock=wall_clock)
        self._config = config
        self._settings = config.settings
        self._report: RiskReport | None = None
        self._recommendations_now: tuple[Recommendation, ...] = ()

    @property
    def policy(self) -> RiskPolicy:
        return self._policy.value

    # -- the fleet's risk ------------------------------------------------------------------

    async def _refresh(self) -> None:
        await self._sampler.update()
        self._recompute()

    def _recompute(self) -> None:
        history = self._sampler.history
        if history is None:
            return
        inputs = RiskInputs.of_fleet(history, self._config.lookback_periods)
        self._report = assess(inputs, self._policy.value, self._settings)
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
        policy, settings = self._policy.value, self._settings
        return await run_cancellable(lambda token: assess(inputs, policy, settings, token=token))

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

            case HaltTrading(scope=scope):
                reason = f"action {action.id} of plan {plan_sequence}"
                if action.rationale:
                    reason += f": {action.rationale[:MAX_REASON]}"
                halt = Halt(scope or PORTFOLIO, at, reason, action.id)

                def update(policy: RiskPolicy) -> tuple[RiskPolicy, str]:
                    return policy.with_halt(
                        halt, sectors=sectors, field="action.parameters.halt_trading.scope"
                    )

            case _:
                raise InvalidArgument(
                    "action.type", "the risk officer executes HALT_TRADING and ADJUST_RISK_LIMITS"
                )
        return update, at

    async def resume(self, scope: str, reason: str) -> bool:
        """Releases the kill switch on ``scope`` (an operator's call); False if not halted."""
        if not scope:
            raise InvalidArgument("scope", "must be 'portfolio' or a halted sector")
        if not reason.strip():
            raise InvalidArgument("reason", "must say why trading may resume")
        if len(reason) > MAX_REASON:
            raise InvalidArgument("reason", f"at most {MAX_REASON} characters")
        if self._policy.value.halt_of(scope) is None:
            return False
        try:
            await self._policy.change(
                lambda policy: policy.without_halt(scope, reason),
                action_key=None,
                market_time=self._market_time(),
            )
        except FailedPrecondition:
            return False  # resumed by a concurrent call
        self._recompute()
        return True
