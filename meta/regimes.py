"""Meta hears the market's regime changes: it follows the world model's WatchRegimes stream, so
the policy's regime rules (``retrain_regime_change``, ``explore_on_regime_change``) fire in a
live mesh without a caller saying the regime changed.

Rules:

* **What counts.** An event whose regime differs from the one before it. The first event a
  world model sends after it started (``previous_regime`` empty) is the regime it found, not a
  change. A change at a market time no later than the latest one noted is a repeat (a restarted
  world model, or another replica of it, numbers its own events) and counts once.
* **Who sees it.** A change at market time ``T`` (:class:`RegimeChanges`, held by the engine):

  - the first meta update at or after ``T`` (:meth:`MetaEngine.update`: the fleet-trade
    follower's on the market clock, or a MetaUpdate) runs with ``regime_changed``, and later
    updates do not: an update's decisions are returned, never executed, so once says it;
    unless a retraining at or after ``T`` answered the change first;
  - the decisions the service measures (:meth:`MetaEngine.decisions_at`, which Recommend
    answers with) see it at every time from ``T`` until the RL models were retrained at or
    after ``T`` (the TuneLearning the rule asks for, or the interval's): the federation acts on
    Recommend at its own cadence and must not miss a change that an update already counted.

  Decide evaluates the caller's own state and reads none of this.
* **Memory.** What was heard is kept in memory, not in meta's store. After a restart meta reads
  the world model's kept events from the first again (and a world model's log behind the cursor,
  a restarted world model, from its start; events dropped from its bounded log are skipped with a
  warning); a change already answered by a retraining after it counts for neither, and one the
  world model no longer keeps is missed, while the ``retrain_interval`` rule still retrains at
  least every ``rl_retrain_interval_hours``.

No gRPC here: the world model's client is passed in.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import structlog

from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.reconnect import follow_forever
from world_model.watch import RegimeChange

_log = structlog.get_logger("meta.regimes")

MAX_KEPT = 64  # unanswered changes kept (changes come at most one per world-model interval)


class RegimeChanges:
    """The market times of the regime changes meta heard of (see the module's rules)."""

    def __init__(self) -> None:
        self._times: list[int] = []
        self._updated_until: int | None = None  # every change at or before it reached an update

    @property
    def latest(self) -> int | None:
        return self._times[-1] if self._times else None

    def note(self, at: int) -> bool:
        """Records a change at market time ``at``; False for a repeat (no later than the latest)."""
        if self._times and at <= self._times[-1]:
            return False
        bisect.insort(self._times, at)
        del self._times[:-MAX_KEPT]
        return True

    def for_update(self, at: int, *, retrained_at: int) -> bool:
        """Whether an update at ``at`` runs with ``regime_changed``: a change at or before
        ``at`` that no update reached and no retraining (requested at ``retrained_at``, 0:
        never) answered yet."""
        since = max(self._updated_until or 0, retrained_at)
        return any(since < t <= at for t in self._times)

    def updated(self, at: int) -> None:
        """An update at ``at`` ran: the changes until then have reached one."""
        if self._updated_until is None or at > self._updated_until:
            self._updated_until = at

    def for_decisions(self, at: int, *, retrained_at: int) -> bool:
        """Whether the decisions at ``at`` see a change: one at or before ``at`` that no
        retraining (requested at ``retrained_at``, 0: never) answered yet."""
        return any(retrained_at < t <= at for t in self._times)


class RegimeNotes(Protocol):
    """Where the follower records a change (implemented by :class:`meta.engine.MetaEngine`)."""

    def note_regime_change(self, at: int) -> bool: ...


class RegimeStream(Protocol):
    """What the follower reads (implemented by WorldModelClient)."""

    def watch_regimes(
        self, *, after_sequence: int | None = None
    ) -> AsyncIterator[RegimeChange]: ...


def hear(notes: RegimeNotes, event: RegimeChange) -> bool:
    """Records ``event`` if it is a change; whether it counted."""
    if not event.is_change or not notes.note_regime_change(event.market_time):
        return False
    _log.info(
        "market regime changed",
        regime=event.regime,
        previous=event.previous_regime,
        probability=round(event.probability, 3),
        market_time=event.market_time,
        sequence=event.sequence,
    )
    return True


async def follow_regimes(
    notes: RegimeNotes,
    world: RegimeStream,
    *,
    initial_backoff: float,
    max_backoff: float,
) -> None:
    """Runs until cancelled: follows the world model's regime events from its first kept one,
    resuming after the last one read."""
    cursor = 0

    async def follow(connected: Callable[[], None]) -> None:
        nonlocal cursor
        while True:
            try:
                async for event in world.watch_regimes(after_sequence=cursor):
                    connected()
                    cursor = event.sequence
                    hear(notes, event)
                return
            except FailedPrecondition as exc:
                oldest = exc.metadata.get("oldest_sequence", "")
                if not oldest.isdigit():
                    raise
                connected()
                _log.warning(
                    "the world model dropped regime events meta had not read",
                    dropped=f"{cursor + 1}..{int(oldest) - 1}",
                )
                cursor = int(oldest) - 1
            except InvalidArgument as exc:
                if exc.field != "after_sequence" or cursor == 0:
                    raise
                connected()
                _log.warning(
                    "the world model's regime log is behind meta's cursor (it restarted); "
                    "following it from its start",
                    cursor=cursor,
                    problem=exc.problem,
                )
                cursor = 0

    await follow_forever(
        follow,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        log=_log,
        what="hearing the world model's regime changes",
    )
