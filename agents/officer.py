"""What the three officers (CEO, risk, strategy) share: following the fleet on the market's clock,
refreshing in the background, and changing the policy each owns only through executed actions.

An :class:`Officer` samples the fleet's returns once per period (:class:`FleetPeriods`), refreshes
whenever the market's clock completes a period or a planning cycle's context shows a newer market
position, and answers Recommend from what the last refresh computed. When the context is at a newer
position than that refresh, Recommend first waits for a refresh, for at most
:data:`CATCH_UP_SECONDS`: in a live mesh the background refresh is nearly always there first, but a
replay moves the clock hours at once, and a plan must rest on the fleet at its own time. Past that
bound (a slow market) it answers from what it has, with that refresh's ``as_of_time``. The policy
an officer owns (the CEO's mode, the risk officer's limits) is an
:class:`~agents.policy_log.OwnedPolicy`: an executed action changes it once per idempotency key,
recorded with the plan and action that caused it and the market time it took effect. An officer may
own none: the strategy officer recommends changes to the book the market's fleet owns.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from agents.fleet_history import FleetHistory, FleetReader, FleetSampler
from agents.policy_log import OwnedPolicy
from agents.refresh import ClockStream, Refresher, follow_clock
from qtmesh.base.config import require
from qtmesh.base.contract import (
    NOT_APPLIED,
    Action,
    AgentContext,
    Execution,
    ExecutionResult,
    Recommendation,
)
from qtmesh.base.errors import InvalidArgument, MeshError

P = TypeVar("P")

# How long Recommend waits for a refresh that catches up with the context's market position.
CATCH_UP_SECONDS = 2.0


class Market(FleetReader, ClockStream, Protocol):
    """What an officer reads from the market (implemented by MarketClient)."""


class FleetPeriods:
    """The settings of how an officer reads the fleet: returns per period of ``period_minutes``,
    over at most ``lookback_periods``, needing ``min_observations``. A config declares the three
    settings (with its own defaults and help) and calls ``check_periods`` from ``__post_init__``.
    """

    period_minutes: float
    lookback_periods: int
    min_observations: int

    def check_periods(self) -> None:
        require(
            math.isfinite(self.period_minutes) and 1 <= self.period_minutes <= 7 * 1440,
            "period_minutes",
            "must be in 1..10080 (one week)",
        )
        require(self.min_observations >= 2, "min_observations", "must be at least 2")
        require(
            self.lookback_periods >= self.min_observations,
            "lookback_periods",
            "must be at least min_observations",
        )

    @property
    def period_nanos(self) -> int:
        return round(self.period_minutes * 60e9)


class Officer(abc.ABC, Generic[P]):
    """An officer agent: subclasses refresh what they know (``_refresh``) and say what they
    recommend from it (``_recommendations``); this class runs the rest."""

    name: str

    def __init__(
        self,
        *,
        market: Market,
        policy: OwnedPolicy[P] | None,
        periods: FleetPeriods,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._market = market
        self._owned = policy
        self._wall_clock = wall_clock
        self._sampler = FleetSampler(
            market, period=periods.period_nanos, max_periods=periods.lookback_periods
        )
        self._refresher = Refresher(self._refresh, name=self.name)
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Loads the stored policy, starts following the market's clock and refreshing."""
        if self._owned is not None:
            await self._owned.load()
        self._follower = asyncio.ensure_future(follow_clock(self._market, self._on_step))
        self._refresher.request()

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._refresher.close()

    @property
    def _policy(self) -> OwnedPolicy[P]:
        """The policy this officer owns (officers that own none never ask for it)."""
        if self._owned is None:
            raise RuntimeError(f"the {self.name} officer owns no policy")
        return self._owned

    @abc.abstractmethod
    async def _refresh(self) -> None:
        """Reads what is new (the fleet through ``self._sampler``) and recomputes."""

    @abc.abstractmethod
    def _recommendations(self) -> list[Recommendation]:
        """What the last refresh calls for; must not wait on anything."""

    def _computed_position(self) -> int | None:
        """The market position the recommendations were computed at (None: never computed)."""
        history = self._sampler.history
        return history.position if history is not None else None

    def _on_step(self, position: int, clock_time: int) -> None:
        history = self._sampler.history
        if history is None or history.completed_periods(clock_time) > history.next_period:
            self._refresher.request()

    @property
    def _history(self) -> FleetHistory | None:
        return self._sampler.history

    def _market_time(self) -> int:
        """The market's clock as last read (the wall clock before the market answered)."""
        history = self._sampler.history
        return history.clock_time if history is not None else self._wall_clock()

    # -- the agent ---------------------------------------------------------------------------

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        computed = self._computed_position()
        if computed is None or (context.market_position and context.market_position != computed):
            refresh = self._refresher.request()
            if computed is not None and context.market_position > computed:
                # Behind the plan's clock: catch up if the market answers in time (see above).
                with contextlib.suppress(MeshError, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(refresh), CATCH_UP_SECONDS)
        return self._recommendations()

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        """Changes the policy as the action asks, once for its idempotency key, recorded with its
        plan and the market time it took effect."""
        if self._owned is None:
            raise InvalidArgument("action.type", f"the {self.name} officer executes no action")
        key = action.idempotency_key
        if not key:
            raise InvalidArgument("action.idempotency_key", "must be set")
        update, at = await self._policy_update(action, plan_sequence)
        result = await self._policy.change(
            update,
            action_key=key,
            action_id=action.id,
            plan_sequence=plan_sequence,
            market_time=at,
        )
        self._recompute()
        return result

    async def execution(self, idempotency_key: str) -> Execution:
        """What this officer's policy log recorded for the key (nothing, owning no policy)."""
        if self._owned is None:
            return NOT_APPLIED
        return await self._owned.execution(idempotency_key)

    async def _policy_update(
        self, action: Action, plan_sequence: int
    ) -> tuple[Callable[[P], tuple[P, str]], int]:
        """How ``action`` changes the policy (raising InvalidArgument for an action this officer
        does not execute), and the market time it takes effect. Officers that own a policy
        override it."""
        raise InvalidArgument("action.type", f"the {self.name} officer executes no action")

    def _recompute(self) -> None:
        """Recomputes the recommendations after the policy changed (default: nothing to do)."""
