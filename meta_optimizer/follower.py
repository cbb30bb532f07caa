"""Following the federation's plan stream to record what became of each proposal.

The follower subscribes to the federation's plans and status updates after the last event it
recorded (kept in the ledger's database with the transitions each event made, in one
transaction), hands each event to the optimizer in sequence order, and reconnects with
exponential backoff whenever the stream fails or ends: the federation restarting, or not started
yet (it starts after the meta optimizer, whose recommendations it asks for). The rules are in
:mod:`meta_optimizer.lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import structlog

from meta_optimizer.engine import MetaOptimizer
from meta_optimizer.ledger import Transition
from meta_optimizer.lifecycle import FederationEvent
from qtmesh.base.reconnect import Sleep, follow_forever

_log = structlog.get_logger("meta_optimizer.follower")

# Called after each event is recorded, with its sequence and the transitions it made.
Observer = Callable[[int, tuple[Transition, ...]], None]


class PlanStream(Protocol):
    """The federation's plan stream (the meta optimizer's client of it, or a test double)."""

    def watch(self, *, after_sequence: int) -> AsyncGenerator[FederationEvent, None]: ...


class PlanFollower:
    def __init__(
        self,
        *,
        optimizer: MetaOptimizer,
        stream: PlanStream,
        initial_backoff: float,
        max_backoff: float,
        observe: Observer | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._optimizer = optimizer
        self._stream = stream
        self._initial = initial_backoff
        self._max = max_backoff
        self._observe = observe
        self._sleep = sleep

    async def run(self) -> None:
        """Follows the plans until cancelled."""
        await follow_forever(
            self._follow,
            initial_backoff=self._initial,
            max_backoff=self._max,
            log=_log,
            what="following the federation's plans",
            sleep=self._sleep,
        )

    async def _follow(self, connected: Callable[[], None]) -> None:
        position = await self._optimizer.followed()
        # Closed however this attempt ends, so a failed write cancels the subscription too.
        async with contextlib.aclosing(
            self._stream.watch(after_sequence=position.after_sequence)
        ) as events:
            async for event in events:
                connected()
                step = await self._optimizer.record_event(event)
                for t in step.transitions:
                    _log.info(
                        "proposal " + t.state.name.lower(),
                        proposal=t.proposal_id,
                        plan=t.plan_id,
                        plan_sequence=t.plan_sequence,
                        action=t.action_id,
                        reason=t.reason,
                    )
                if self._observe is not None:
                    self._observe(event.sequence, step.transitions)
