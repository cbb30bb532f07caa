"""What meta remembers of its decisions: every new parameter version, as an episode of the
memory engine, once the next adaptation measured what followed it.

**Which versions.** Every version the engine writes after the service started: the OS's
adaptations (on MetaUpdate, the fleet's trades, SESA's evaluations), the TUNE_LEARNING actions
it executes, the evolutions it records and the clipping into narrowed bounds. They are read
from the engine's version history as it grows (the same history WatchParameters serves), so
no update waits for memory.

**One episode per version:**

* ``sector``: :data:`SUBJECT` (``meta``), not a market sector: the memory agent, which advises
  on the market's sectors, never mixes meta's decisions with plan outcomes, and a recall for
  ``sector=meta`` finds exactly these;
* ``decision``: what kind of decision made the version: ``adapt`` (the OS adapted on its
  window), ``tune_learning`` (an executed action set parameters or asked for retraining),
  ``record_evolution`` (a completed evolution restarted the evolution interval) or
  ``clip_to_bounds`` (a configuration narrowed the bounds);
* ``features``: the situation it was decided in: every tuned scalar as it stood before the
  version (``rl_learning_rate``, ..., ``sesa_mutation_magnitude``) and the performance baseline
  then (``baseline_performance``, the OS's smoothed window Sharpe, once it has one);
* ``outcome``: what followed: how the baseline moved from the one this version left to the one
  the next adaptation left (positive: the window performance the next adaptation measured was
  above it). A version is stored when that adaptation comes; one that left no baseline yet
  (before the first adaptation) has outcome 0 and the tag ``measured=no``;
* ``tags``: ``source=meta``, ``version``, ``cause``, ``rules`` (the meta policy's actionable
  rules on the state the service measured at the version's time:
  :meth:`meta.engine.MetaEngine.decisions_at`), ``changes`` (``name old->new; ...``),
  ``reason.<name>`` per tuned scalar that moved (the adaptation rule that moved it, or the
  action that set it), ``action_key``, ``retrain=requested`` and ``evolution=recorded``;
* ``time``: the version's update time (the market clock it was decided on).

Ids are digests of the version, its time and cause, so a retried store is recognised. What
waits for the next adaptation lives in this process only (a restart drops it) and is bounded
by :data:`MAX_PENDING` (the oldest are dropped, logged). Storing goes through a
:class:`memory.recorder.Recorder`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Protocol

import structlog

from memory.episodes import Episode
from memory.recorder import Recorder
from meta.model import ACTIONABLE, SCALARS, MetaDecision
from meta.store import VersionRecord
from qtmesh.base.errors import MeshError
from qtmesh.base.signal import ChangeSignal

SUBJECT = "meta"
MAX_PENDING = 256
HISTORY_BATCH = 100
_MAX_TAG = 200
_log = structlog.get_logger("meta.memory")


class Versions(Protocol):
    """What meta's memory reads from the engine (MetaEngine)."""

    signal: ChangeSignal

    @property
    def current(self) -> VersionRecord: ...

    async def history(self, after_version: int, limit: int = 100) -> list[VersionRecord]: ...

    async def decisions_at(self, now: int | None = None) -> tuple[MetaDecision, ...]: ...


def decision_of(record: VersionRecord, previous: VersionRecord) -> str:
    """The kind of decision that made ``record`` (see the module)."""
    if record.parameters.cause == "configuration bounds":
        return "clip_to_bounds"
    if record.tracked.last_adaptation_time != previous.tracked.last_adaptation_time:
        return "adapt"
    evolved = record.tracked.last_evolution_time != previous.tracked.last_evolution_time
    if evolved and not record.changes:
        return "record_evolution"
    return "tune_learning"


@dataclasses.dataclass(frozen=True)
class Decided:
    """A version waiting for the next adaptation to measure what followed it."""

    record: VersionRecord
    previous: VersionRecord
    rules: tuple[str, ...]


def episode(decided: Decided, *, baseline_after: float | None) -> Episode:
    """The episode of a version once the baseline after it is known (None: not measured)."""
    record, previous = decided.record, decided.previous
    parameters = record.parameters
    before = previous.tracked.baseline_performance
    features = {name: float(getattr(previous.parameters, name)) for name in SCALARS}
    if before is not None:
        features["baseline_performance"] = before
    left = record.tracked.baseline_performance
    changes = "; ".join(f"{c.name} {c.old_value:.4g}->{c.new_value:.4g}" for c in record.changes)
    tags = {
        "source": "meta",
        "version": str(record.version),
        "cause": parameters.cause[:_MAX_TAG],
        "rules": ",".join(decided.rules)[:_MAX_TAG],
        "changes": changes[:_MAX_TAG],
        "action_key": (record.action_key or "")[:_MAX_TAG],
        "measured": "no" if left is None or baseline_after is None else "yes",
    }
    for change in record.changes:
        if change.name in SCALARS and change.reason:
            tags[f"reason.{change.name}"] = change.reason[:_MAX_TAG]
    if parameters.retrain_requested_time != previous.parameters.retrain_requested_time:
        tags["retrain"] = "requested"
    if record.tracked.last_evolution_time != previous.tracked.last_evolution_time:
        tags["evolution"] = "recorded"
    key = (record.version, parameters.update_time, parameters.cause, record.action_key)
    digest = hashlib.blake2b("\0".join(map(str, key)).encode(), digest_size=12).hexdigest()
    return Episode(
        id=f"meta-{digest}",
        time=max(parameters.update_time, 0),
        features=features,
        decision=decision_of(record, previous),
        outcome=0.0 if left is None or baseline_after is None else baseline_after - left,
        sector=SUBJECT,
        tags={k: v for k, v in tags.items() if v},
    )


class DecisionMemory:
    """Follows the engine's versions and records each as an episode (see the module)."""

    def __init__(self, engine: Versions, recorder: Recorder) -> None:
        self._engine = engine
        self._recorder = recorder
        self._pending: list[Decided] = []

    def add(self, decided: Decided) -> list[Episode]:
        """Takes a new version; returns the episodes it settles (every version pending when
        it is an adaptation)."""
        settled: list[Episode] = []
        if decision_of(decided.record, decided.previous) == "adapt":
            after = decided.record.tracked.baseline_performance
            settled = [episode(d, baseline_after=after) for d in self._pending]
            self._pending = []
        self._pending.append(decided)
        if len(self._pending) > MAX_PENDING:
            lost = self._pending.pop(0)
            _log.warning(
                "too many meta versions wait for an adaptation; the oldest is not remembered",
                version=lost.record.version,
            )
        return settled

    async def follow(self) -> None:
        """Records the versions written from now on, until cancelled."""
        await asyncio.gather(self._follow(), self._recorder.run())

    async def _follow(self) -> None:
        engine = self._engine
        previous = engine.current
        while True:
            written = engine.signal.current()  # taken before reading: no version is missed
            try:
                batch = await engine.history(previous.version, HISTORY_BATCH)
                for record in batch:
                    for made in self.add(Decided(record, previous, await self._rules(record))):
                        self._recorder.record(made)
                    previous = record
            except Exception:
                # Memory is a by-product: a failed read is logged, and the next version retries.
                _log.exception("reading meta's versions for memory failed")
                batch = []
            if batch:
                continue
            if engine.signal.draining:
                return
            await written.wait()

    async def _rules(self, record: VersionRecord) -> tuple[str, ...]:
        try:
            decisions = await self._engine.decisions_at(record.parameters.update_time or None)
        except MeshError as exc:
            _log.warning("meta's decisions not read for memory", error=exc.message)
            return ()
        return _actionable(decisions)


def _actionable(decisions: Sequence[MetaDecision]) -> tuple[str, ...]:
    return tuple(d.rule for d in decisions if d.type in ACTIONABLE)
