"""Async client of the federation: plans, history and the resumable plan stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

import grpc

from federation import _convert as convert
from federation.plan import Plan, StatusUpdate
from qtmesh.api.agent.v1 import agent_pb2
from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.api.federation.v1 import federation_pb2_grpc as pb_grpc
from qtmesh.base.contract import ActionStatus, ActionType, Priority
from qtmesh.base.convert import enum_to_proto, timestamp
from qtmesh.runtime.status import mesh_stub


class FederationClient:
    """Calls FederationService; returns plans and status updates as domain objects."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.FederationServiceStub, channel)

    async def generate_plan(
        self, *, hints: Mapping[str, str] | None = None, execute: bool = False
    ) -> Plan:
        response = await self._stub.GeneratePlan(
            pb.GeneratePlanRequest(hints=dict(hints or {}), execute=execute),
        )
        return convert.plan_from_proto(response.plan)

    async def get_plan(self, sequence: int) -> Plan:
        response = await self._stub.GetPlan(pb.GetPlanRequest(sequence=sequence))
        return convert.plan_from_proto(response.plan)

    async def list_plans(
        self,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        min_priority: Priority | None = None,
        page_size: int = 0,
    ) -> AsyncIterator[Plan]:
        """Every matching plan, oldest first, across pages."""
        request = pb.ListPlansRequest(page_size=page_size)
        if start_time is not None:
            request.start_time.CopyFrom(timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(timestamp(end_time))
        if min_priority is not None:
            request.min_priority = enum_to_proto(agent_pb2.Priority, min_priority)
        while True:
            response = await self._stub.ListPlans(request)
            for plan in response.plans:
                yield convert.plan_from_proto(plan)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def report_status(
        self, plan_sequence: int, action_id: str, status: ActionStatus, detail: str = ""
    ) -> int:
        response = await self._stub.ReportActionStatus(
            pb.ReportActionStatusRequest(
                plan_sequence=plan_sequence,
                action_id=action_id,
                status=enum_to_proto(agent_pb2.ActionStatus, status),
                detail=detail,
            ),
        )
        return response.sequence

    async def subscribe(
        self,
        *,
        after_sequence: int | None = None,
        min_priority: Priority | None = None,
        action_types: Sequence[ActionType] = (),
    ) -> AsyncIterator[tuple[int, Plan | StatusUpdate]]:
        """Yields (sequence, plan or status update). To resume after a disconnect, subscribe
        again with ``after_sequence`` set to the last sequence received."""
        request = pb.SubscribePlansRequest(
            action_types=[enum_to_proto(agent_pb2.ActionType, t) for t in action_types]
        )
        if after_sequence is not None:
            request.after_sequence = after_sequence
        if min_priority is not None:
            request.min_priority = enum_to_proto(agent_pb2.Priority, min_priority)
        call = self._stub.SubscribePlans(request)
        try:
            async for event in call:
                if event.HasField("plan"):
                    yield event.sequence, convert.plan_from_proto(event.plan)
                else:
                    yield (
                        event.sequence,
                        convert.status_from_proto(event.status_update, event.sequence),
                    )
        finally:
            call.cancel()
