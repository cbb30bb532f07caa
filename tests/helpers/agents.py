"""Test doubles of the agent contract, served by the real runtime."""

from __future__ import annotations

import asyncio

import grpc

from qtmesh.api.agent.v1 import agent_pb2, agent_pb2_grpc
from qtmesh.base.errors import InvalidArgument, NotFound
from qtmesh.runtime.server import Service


class ScriptedAgent(agent_pb2_grpc.AgentServiceServicer):
    """An AgentService whose Recommend does what ``context.hints["behavior"]`` says.

    block: waits until cancelled (records it); invalid / missing: raises a domain error;
    crash: raises a plain exception; gate: waits for ``release`` then answers.
    """

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()

    async def Recommend(
        self, request: agent_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.RecommendResponse:
        behavior = request.context.hints.get("behavior", "echo")
        self.started.set()
        if behavior == "block":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if behavior == "gate":
            await self.release.wait()
            self.finished.set()
        if behavior == "invalid":
            raise InvalidArgument("context.hints[behavior]", "is not a behaviour I accept")
        if behavior == "missing":
            raise NotFound("no such plan")
        if behavior == "crash":
            raise RuntimeError("secret internal detail")
        return agent_pb2.RecommendResponse(
            agent="scripted",
            recommendations=[agent_pb2.Recommendation(id="r1", rationale=request.context.cycle_id)],
        )


def agent_service(agent: ScriptedAgent) -> Service:
    return Service.of(
        agent,
        agent_pb2_grpc.add_AgentServiceServicer_to_server,
        agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    )
