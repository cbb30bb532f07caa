"""Fakes of the federation tests: scripted agents and owners, recommendation builders, and a
federation served over real agent servers."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from federation.config import FederationConfig
from federation.service import APP
from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving, serving_app


class FakeAgent:
    """An agent with scripted answers; ``block`` makes Recommend hang until cancelled."""

    def __init__(self, name, recommendations=(), *, block=False, error=None) -> None:
        self.name = name
        self.recommendations = list(recommendations)
        self.block = block
        self.error = error
        self.cancelled = asyncio.Event()
        self.executed: list[str] = []

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
        self.executed.append(action.idempotency_key)
        return c.ExecutionResult(True, f"{self.name} did {action.id}")


def rec(rid, parameters, confidence=0.7, priority=c.Priority.MEDIUM, depends_on=()):
    return c.Recommendation(
        id=rid,
        priority=priority,
        target="t",
        parameters=parameters,
        confidence=confidence,
        rationale=f"because {rid}",
        depends_on=depends_on,
    )


EVOLVE = c.RunEvolution(symbols=("ORBT",))

TUNE = c.TuneLearning(parameters={"rl_exploration_rate": 0.1})


@contextlib.asynccontextmanager
async def mesh(
    tmp_path: Path,
    agents: list[FakeAgent],
    *,
    dead: tuple[str, ...] = (),
    killed: tuple[FakeAgent, ...] = (),
    **config,
):
    """Serves each fake agent, then a federation asking them all; ``dead`` names point where
    nothing ever listened, ``killed`` agents are served, then stopped once the federation runs."""
    async with contextlib.AsyncExitStack() as stack:
        addresses = {}
        servers = {}
        for agent in (*agents, *killed):
            running = await stack.enter_async_context(
                serving([agent_service(agent, executes=list(c.ActionType))], name=agent.name)
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
            **config,
        }
        channels = ChannelConfig(addresses={**addresses, "market": "127.0.0.1:1"})
        running = await stack.enter_async_context(
            serving_app(APP, FederationConfig(**settings), channel_config=channels)
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
