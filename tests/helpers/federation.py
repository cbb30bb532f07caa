"""Fakes of the federation tests: scripted agents and owners, recommendation builders, a
market clock a test moves, and a federation served over real agent servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path

from federation.config import FederationConfig
from federation.engine import Federation
from federation.service import APP, FederationServicer, service_of
from federation.store import PlanStore
from qtmesh.base import contract as c
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.agent_service import AgentClient, agent_service
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.server import ServerConfig
from qtmesh.testing import Running, serving, serving_app

MARKET = 1_800_000_000 * 10**9  # a market clock far from the wall clock: 2027-01-15T08:00:00Z
DAY = 86_400 * 10**9


class FakeAgent:
    """An agent with scripted answers; ``block`` makes Recommend hang until cancelled.

    Executing, it returns ``outcome``; with ``gate`` it holds the actions of ``gated`` types
    (every type if empty) until the gate opens. ``executing`` holds the ids it has been sent.
    """

    def __init__(
        self,
        name,
        recommendations=(),
        *,
        block=False,
        error=None,
        outcome: Mapping[str, str] | None = None,
        gate: asyncio.Event | None = None,
        gated: tuple[c.ActionType, ...] = (),
    ) -> None:
        self.name = name
        self.recommendations = list(recommendations)
        self.block = block
        self.error = error
        self.cancelled = asyncio.Event()
        self.executed: list[str] = []
        self.outcome = dict(outcome or {})
        self.gate = gate
        self.gated = gated
        self.executing: list[str] = []
        self.sent = asyncio.Condition()

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        if self.block:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.error is not None:
            raise self.error
        return list(self.recommendations)

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        async with self.sent:
            self.executing.append(action.id)
            self.sent.notify_all()
        if self.gate is not None and (not self.gated or action.action_type in self.gated):
            await self.gate.wait()
        self.executed.append(action.idempotency_key)
        return c.ExecutionResult(True, f"{self.name} did {action.id}", self.outcome)

    async def wait_executing(self, count: int) -> None:
        """Returns once ``count`` actions have been sent to this agent."""
        async with self.sent:
            await self.sent.wait_for(lambda: len(self.executing) >= count)


def rec(rid, parameters, confidence=0.7, priority=c.Priority.MEDIUM, depends_on=(), as_of_time=0):
    return c.Recommendation(
        id=rid,
        priority=priority,
        target="t",
        parameters=parameters,
        confidence=confidence,
        rationale=f"because {rid}",
        depends_on=depends_on,
        as_of_time=as_of_time,
    )


class MarketClock:
    """The market clock a federation follows, as (clock time, position); a test moves it."""

    def __init__(self, now: int, position: int = 100) -> None:
        self.now = now
        self.position = position

    def __call__(self) -> tuple[int, int]:
        return self.now, self.position


@contextlib.asynccontextmanager
async def served_federation(tmp_path: Path, agents: list[FakeAgent], *, market_clock, **config):
    """A federation on ``market_clock`` over each fake agent served on its own port (asked, and
    owner of every action type), itself served on port 0; yields (running server, Federation).
    """
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for agent in agents:
            running = await stack.enter_async_context(
                serving([agent_service(agent, executes=list(c.ActionType))], name=agent.name)
            )
            clients[agent.name] = AgentClient(running.channel, name=agent.name)
        owner = agents[0].name
        settings = {
            "agents": tuple(clients),
            "owners": {t.name: owner for t in c.ActionType},
            "gap_update_interval_seconds": 0.0,
            "data_dir": tmp_path,
            **config,
        }
        store = PlanStore(create_engine(sqlite_url(tmp_path / "federation.db")))
        stack.callback(store.close)
        federation = Federation(
            config=FederationConfig(**settings),
            agents=clients,
            owners=clients,
            store=store,
            market_clock=market_clock,
        )
        stack.push_async_callback(federation.close)
        servicer = FederationServicer(federation)
        server: Running = await stack.enter_async_context(
            serving([service_of(servicer)], name="federation")
        )
        yield server, federation


EVOLVE = c.RunEvolution(symbols=("ORBT",))

TUNE = c.TuneLearning(parameters={"rl_exploration_rate": 0.1})


@contextlib.asynccontextmanager
async def mesh(
    tmp_path: Path,
    agents: list[FakeAgent],
    *,
    dead: tuple[str, ...] = (),
    killed: tuple[FakeAgent, ...] = (),
    tracer_provider=None,
    server_config: ServerConfig | None = None,
    **config,
):
    """Serves each fake agent, then a federation asking them all; ``dead`` names point where
    nothing ever listened, ``killed`` agents are served, then stopped once the federation runs.
    Every server traces with ``tracer_provider`` if given; the federation's has
    ``server_config`` if given."""
    async with contextlib.AsyncExitStack() as stack:
        addresses = {}
        servers = {}
        for agent in (*agents, *killed):
            running = await stack.enter_async_context(
                serving(
                    [agent_service(agent, executes=list(c.ActionType))],
                    name=agent.name,
                    tracer_provider=tracer_provider,
                )
            )
            addresses[agent.name] = running.address
            servers[agent.name] = running.server
        for name in dead:
            addresses[name] = "127.0.0.1:1"  # nothing listens there
        settings = {
            "agents": tuple(addresses),
            "owners": {"RUN_EVOLUTION": agents[0].name, "TUNE_LEARNING": agents[0].name},
            "gap_update_interval_seconds": 0.0,
            "data_dir": tmp_path,
            "agent_timeout_seconds": 2.0,
            "record_to_memory": False,  # no memory is served
            **config,
        }
        channels = ChannelConfig(addresses={**addresses, "market": "127.0.0.1:1"})
        running = await stack.enter_async_context(
            serving_app(
                APP,
                FederationConfig(**settings),
                channel_config=channels,
                server_config=server_config,
                tracer_provider=tracer_provider,
            )
        )
        for agent in killed:
            await servers[agent.name].stop(grace=0)
        yield running


class Owner:
    """Executes actions; ``behaviour[id]`` is a list of exceptions to raise before succeeding."""

    name = "owner"

    def __init__(self, behaviour=None, gate: asyncio.Event | None = None) -> None:
        self.behaviour = {k: list(v) for k, v in (behaviour or {}).items()}
        self.gate = gate
        self.keys: list[str] = []
        self.running = 0
        self.peak = 0
        self.started = asyncio.Condition()

    async def recommend(self, context):
        return []

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        self.keys.append(action.idempotency_key)
        self.running += 1
        self.peak = max(self.peak, self.running)
        async with self.started:
            self.started.notify_all()
        try:
            if self.gate is not None:
                await self.gate.wait()
            failures = self.behaviour.get(action.id, [])
            if failures:
                raise failures.pop(0)
            return c.ExecutionResult(True, f"did {action.id}")
        finally:
            self.running -= 1
