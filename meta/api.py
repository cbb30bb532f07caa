"""The spec's ``MetaLearningOS`` and ``MetaPolicy``, thin layers over
:class:`meta.engine.MetaEngine` and :class:`meta.policy.MetaPolicy`.

``MetaLearningOS(config=MetaLearningConfig(), meta_policy=MetaPolicy())`` runs the real meta
engine in process on a SQLite store (a temporary directory unless ``store_url`` names one).
``run_meta_update(recent_trades=..., recent_evaluations=...)`` is a coroutine, as the spec awaits
it: it is :meth:`MetaEngine.update`, which keeps its CPU and storage work off the event loop.
Without ``now`` the update runs at the market time of its newest input (the latest trade exit or
evaluation), not the wall clock, so replayed data falls inside the performance window.

Against a running mesh, ``MetaLearningOS(address="host:port")`` (or
:meth:`MetaLearningOS.from_mesh`, which reads the ``meta`` entry of ``.qtmesh/mesh.json`` that
``qtmesh up`` writes) sends the same update through :class:`meta.client.MetaClient` and keeps no
engine of its own. It opens a channel per call, on the caller's event loop: an aio channel
belongs to the loop it was opened on, and the facade does not know which loop will await it.

``MetaPolicy`` answers the spec's questions from the decisions of the domain policy: those of
the last update of the OS it is bound to, or, given a ``state``, those the rules make on it.
The answers are synchronous, as the spec calls them.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from meta.client import MetaClient
from meta.config import MetaLearningConfig, MetaPolicyRules
from meta.engine import MetaEngine, UpdateResult
from meta.model import DecisionType, Evaluation, MetaDecision, MetaState, Trade
from meta.policy import MetaPolicy as RulePolicy
from meta.store import MetaStore
from qtmesh.base.errors import FailedPrecondition
from qtmesh.base.storage import sqlite_url
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import STATE_FILE, address_in_state


class MetaPolicy:
    """The spec's meta policy: the rules of ``rules`` (defaults when None), asked in plain terms."""

    def __init__(self, rules: MetaPolicyRules | None = None) -> None:
        self.rules = rules or MetaPolicyRules()
        self.decisions: tuple[MetaDecision, ...] | None = None

    def observe(self, decisions: Sequence[MetaDecision]) -> None:
        """Takes the decisions of a meta update as the ones the questions read."""
        self.decisions = tuple(decisions)

    def decide(self, state: MetaState | None = None) -> tuple[MetaDecision, ...]:
        if state is not None:
            return RulePolicy(self.rules).decide(state)
        if self.decisions is None:
            raise FailedPrecondition("no meta update has run yet: pass a state")
        return self.decisions

    def _of(self, state: MetaState | None, *types: DecisionType) -> list[MetaDecision]:
        return [d for d in self.decide(state) if d.type in types]

    def should_run_sesa_evolution(self, state: MetaState | None = None) -> bool:
        """The interval since the last evolution is over, or performance dropped."""
        return bool(self._of(state, DecisionType.RUN_EVOLUTION))

    def should_retrain_rl_models(self, state: MetaState | None = None) -> bool:
        """The retraining interval is over, or the regime changed."""
        return bool(self._of(state, DecisionType.RETRAIN_MODELS))

    def should_promote_shadow_strategy(
        self, strategy_id: str, state: MetaState | None = None
    ) -> bool:
        """The shadow strategy ``strategy_id`` passed every promotion gate."""
        return any(
            d.strategy_id == strategy_id for d in self._of(state, DecisionType.PROMOTE_SHADOW)
        )

    def determine_explore_exploit_mode(self, state: MetaState | None = None) -> str:
        """``"explore"`` or ``"exploit"`` when the policy switches, ``"hold"`` when it keeps."""
        for d in self._of(state, DecisionType.SWITCH_TO_EXPLORE, DecisionType.SWITCH_TO_EXPLOIT):
            return "explore" if d.type is DecisionType.SWITCH_TO_EXPLORE else "exploit"
        return "hold"

    def adjust_risk_limits(
        self, current_multiplier: float = 1.0, state: MetaState | None = None
    ) -> float:
        """The risk multiplier the policy proposes (``current_multiplier`` when it keeps it)."""
        for d in self._of(state, DecisionType.INCREASE_RISK, DecisionType.DECREASE_RISK):
            return float(d.proposed.get("risk_multiplier", current_multiplier))
        return current_multiplier


class MetaLearningOS:
    """The meta engine in process, or a mesh's meta service at ``address`` (module docstring).

    In process, :attr:`engine` is the real :class:`MetaEngine`; remotely it is None and the
    service's own configuration applies (``config`` and the policy's rules are not sent)."""

    def __init__(
        self,
        *,
        config: MetaLearningConfig | None = None,
        meta_policy: MetaPolicy | None = None,
        store_url: str | None = None,
        address: str | None = None,
    ) -> None:
        self.config = config or MetaLearningConfig()
        self.meta_policy = meta_policy or MetaPolicy()
        self.address = address
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self.store: MetaStore | None = None
        self.engine: MetaEngine | None = None
        if address is None:
            if store_url is None:
                self._directory = tempfile.TemporaryDirectory(prefix="meta-")
                store_url = sqlite_url(Path(self._directory.name) / "meta.db")
            self.store = MetaStore(store_url)
            self.engine = MetaEngine(
                store=self.store,
                learning=self.config,
                rules=self.meta_policy.rules,
                clock=time.time_ns,
            )
        # Market time of the latest update (None before the first).
        self.last_time: int | None = None
        self._started = False
        self._start_lock = asyncio.Lock()

    @classmethod
    def from_mesh(
        cls, *, meta_policy: MetaPolicy | None = None, mesh_file: Path = STATE_FILE
    ) -> MetaLearningOS:
        """The meta service of the mesh ``qtmesh up`` started (``mesh_file``)."""
        return cls(meta_policy=meta_policy, address=address_in_state("meta", mesh_file))

    async def start(self) -> MetaEngine:
        """The in-process engine, started once."""
        if self.engine is None:
            raise FailedPrecondition(f"this MetaLearningOS is the meta service at {self.address}")
        async with self._start_lock:
            if not self._started:
                await self.engine.start()
                self._started = True
        return self.engine

    async def run_meta_update(
        self,
        *,
        recent_trades: Sequence[Trade] = (),
        recent_evaluations: Sequence[Evaluation] = (),
        now: int | None = None,
    ) -> UpdateResult:
        times = [t.exit_time for t in recent_trades] + [
            e.evaluated_time for e in recent_evaluations
        ]
        at = now if now is not None else (max(times) if times else None)
        trades, evaluations = list(recent_trades), list(recent_evaluations)
        if self.address is not None:
            async with open_channel(self.address) as channel:
                result = await MetaClient(channel).update(trades, evaluations, now=at)
            self.last_time = at if at is not None else time.time_ns()
        else:
            engine = await self.start()
            result = await engine.update(trades, evaluations, now=at)
            self.last_time = engine.now(at)
        self.meta_policy.observe(result.decisions)
        return result

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self._directory is not None:
            self._directory.cleanup()
