"""AgentService adapters: serve any :class:`~qtmesh.base.contract.Agent` over gRPC, and call a
remote one through :class:`AgentClient`, which implements the same protocol."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Collection
from typing import Any

import grpc

from qtmesh.api.agent.v1 import agent_pb2 as pb
from qtmesh.api.agent.v1 import agent_pb2_grpc as pb_grpc
from qtmesh.base import convert
from qtmesh.base.contract import (
    NOT_APPLIED,
    Action,
    ActionType,
    Agent,
    AgentContext,
    Execution,
    ExecutionResult,
    ExecutionState,
    Recommendation,
    RecordsExecutions,
    validate_recommendations,
)
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, MeshError
from qtmesh.runtime.server import Service
from qtmesh.runtime.status import mesh_stub

# Idempotency keys are stored in columns of 256 characters (agents/policy_log.py).
MAX_KEY_LENGTH = 256


class AgentServicer(pb_grpc.AgentServiceServicer):
    """Serves ``agent``. ExecuteAction accepts only the action types in ``executes`` and applies
    each idempotency key once: a repeated key returns ``applied=False`` with the first result.
    The keys of the last ``remembered`` applied actions are kept in memory.

    GetExecution answers from the calls under way and those memories first, then from the
    agent's durable record (:class:`~qtmesh.base.contract.RecordsExecutions`). An agent that
    executes nothing never applied anything; one that executes actions but keeps no record
    cannot say, and answers FAILED_PRECONDITION rather than a guess."""

    def __init__(
        self, agent: Agent, *, executes: Collection[ActionType] = (), remembered: int = 10_000
    ) -> None:
        self._agent = agent
        self._executes = frozenset(executes)
        self._remembered = remembered
        self._applied: OrderedDict[str, ExecutionResult] = OrderedDict()
        self._running: dict[str, asyncio.Future[ExecutionResult]] = {}

    async def Recommend(
        self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecommendResponse:
        recommendations = await self._agent.recommend(convert.context_from_proto(request.context))
        try:
            validate_recommendations(self._agent.name, recommendations)
        except InvalidArgument as exc:
            # The caller's request was fine; the agent itself misbehaved.
            raise MeshError(
                f"agent {self._agent.name} produced an invalid recommendation: {exc}"
            ) from None
        return pb.RecommendResponse(
            agent=self._agent.name,
            recommendations=[convert.recommendation_to_proto(r) for r in recommendations],
        )

    async def ExecuteAction(
        self, request: pb.ExecuteActionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ExecuteActionResponse:
        action = convert.action_from_proto(request.action, field="action")
        if action.action_type not in self._executes:
            owned = ", ".join(sorted(t.name for t in self._executes)) or "none"
            raise InvalidArgument(
                "action.type",
                f"{self._agent.name} does not execute {action.action_type.name} "
                f"(it executes: {owned})",
            )
        key = action.idempotency_key
        if not key:
            raise InvalidArgument("action.idempotency_key", "must be set")
        result = await self._execute_once(key, action, request.plan_sequence)
        return pb.ExecuteActionResponse(
            applied=result.applied, detail=result.detail, outcome=dict(result.outcome)
        )

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetExecutionResponse:
        key = request.idempotency_key
        if not key:
            raise InvalidArgument("idempotency_key", "must be set")
        if len(key) > MAX_KEY_LENGTH:
            raise InvalidArgument("idempotency_key", f"longer than {MAX_KEY_LENGTH} characters")
        return _execution_to_proto(await self._execution(key))

    async def _execution(self, key: str) -> Execution:
        if key in self._running:
            return Execution(ExecutionState.RUNNING)
        remembered = self._applied.get(key)
        if remembered is not None and remembered.applied:
            return Execution.applied(remembered)
        # An answer of "already applied" came from the agent's record: asked again below.
        if isinstance(self._agent, RecordsExecutions):
            return await self._agent.execution(key)
        if not self._executes:
            return NOT_APPLIED
        raise FailedPrecondition(
            f"{self._agent.name} keeps no durable record of the actions it applied"
        )

    async def _execute_once(self, key: str, action: Action, plan_sequence: int) -> ExecutionResult:
        if key in self._applied:
            first = self._applied[key]
            return ExecutionResult(False, f"already applied: {first.detail}", first.outcome)
        if key in self._running:
            first = await asyncio.shield(self._running[key])
            return ExecutionResult(False, f"already applied: {first.detail}", first.outcome)
        future: asyncio.Future[ExecutionResult] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await self._agent.execute(action, plan_sequence=plan_sequence)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved; waiters see it, nobody else must
            raise
        finally:
            del self._running[key]
        future.set_result(result)
        self._applied[key] = result
        while len(self._applied) > self._remembered:
            self._applied.popitem(last=False)
        return result


def agent_service(agent: Agent, *, executes: Collection[ActionType] = ()) -> Service:
    """The AgentService of ``agent``, ready to add to a MeshServer."""
    return Service.of(
        AgentServicer(agent, executes=executes),
        pb_grpc.add_AgentServiceServicer_to_server,
        pb.DESCRIPTOR.services_by_name["AgentService"],
    )


class AgentClient:
    """A remote agent. Implements :class:`~qtmesh.base.contract.Agent`; failures raise MeshError."""

    takes_timeout = True  # see qtmesh.base.contract.takes_timeout

    def __init__(self, channel: grpc.aio.Channel, *, name: str) -> None:
        self.name = name
        self._stub = mesh_stub(pb_grpc.AgentServiceStub, channel)

    async def recommend(
        self, context: AgentContext, *, timeout: float | None = None
    ) -> list[Recommendation]:
        """``timeout`` (seconds) overrides the channel's default deadline for this call."""
        response = await self._stub.Recommend(
            pb.RecommendRequest(context=convert.context_to_proto(context)), timeout=timeout
        )
        recommendations = [
            convert.recommendation_from_proto(r, field=f"recommendations[{i}]")
            for i, r in enumerate(response.recommendations)
        ]
        validate_recommendations(self.name, recommendations)
        return recommendations

    async def execute(
        self, action: Action, *, plan_sequence: int, timeout: float | None = None
    ) -> ExecutionResult:
        response = await self._stub.ExecuteAction(
            pb.ExecuteActionRequest(
                action=convert.action_to_proto(action), plan_sequence=plan_sequence
            ),
            timeout=timeout,
        )
        return ExecutionResult(response.applied, response.detail, dict(response.outcome))

    async def execution(self, idempotency_key: str, *, timeout: float | None = None) -> Execution:
        """What the agent knows of ``idempotency_key`` (AgentService.GetExecution)."""
        response = await self._stub.GetExecution(
            pb.GetExecutionRequest(idempotency_key=idempotency_key), timeout=timeout
        )
        return _execution_from_proto(response)


def _execution_to_proto(execution: Execution) -> pb.GetExecutionResponse:
    return pb.GetExecutionResponse(
        state=convert.enum_to_proto(pb.ExecutionState, execution.state),
        detail=execution.detail,
        outcome=dict(execution.outcome),
    )


def _execution_from_proto(message: pb.GetExecutionResponse) -> Execution:
    try:
        state = convert.enum_from_proto(ExecutionState, pb.ExecutionState, message.state, field="")
    except InvalidArgument:
        raise MeshError(f"GetExecution answered an unknown state {message.state}") from None
    return Execution(state, message.detail, dict(message.outcome))
