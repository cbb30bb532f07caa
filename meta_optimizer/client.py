"""Async client of the meta optimizer, returning the same domain objects as its engine; and the
meta optimizer's own client of the federation's plan stream (:class:`PlanFeed`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import grpc

from meta_optimizer import _convert as convert
from meta_optimizer.audit import ProposalType
from meta_optimizer.engine import Pulse
from meta_optimizer.ledger import Cycle, LedgerEvent, Proposal, ProposalState, Verification
from meta_optimizer.lifecycle import FederationEvent
from qtmesh.api.federation.v1 import federation_pb2, federation_pb2_grpc
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2 as pb
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2_grpc as pb_grpc
from qtmesh.base.convert import enum_to_proto, timestamp
from qtmesh.runtime.status import mesh_stub


class MetaOptimizerClient:
    """Calls MetaOptimizerService over ``channel``; failures raise the server's MeshError."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.MetaOptimizerServiceStub, channel)

    async def run_cycle(self, *, start_date: str = "", end_date: str = "") -> Cycle:
        response = await self._stub.RunOptimizationCycle(
            pb.RunOptimizationCycleRequest(start_date=start_date, end_date=end_date),
        )
        return convert.cycle_from_proto(response.cycle)

    async def proposals_page(
        self,
        *,
        sector: str = "",
        type: ProposalType | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        state: ProposalState | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Proposal], str]:
        """One page of the ledger, oldest first, and the next page's token; ``state``
        PROPOSED lists the active proposals."""
        request = pb.ListProposalsRequest(
            sector=sector,
            type=enum_to_proto(pb.ProposalType, type) if type else None,
            state=enum_to_proto(pb.ProposalState, state) if state else None,
            page_size=page_size,
            page_token=page_token,
        )
        if start_time is not None:
            request.start_time.CopyFrom(timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(timestamp(end_time))
        response = await self._stub.ListProposals(request)
        return [
            convert.proposal_from_proto(p) for p in response.proposals
        ], response.next_page_token

    async def proposals(
        self,
        *,
        sector: str = "",
        type: ProposalType | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        state: ProposalState | None = None,
    ) -> list[Proposal]:
        """The proposal history (the spec's get_proposal_history), every page."""
        found: list[Proposal] = []
        token = ""
        while True:
            page, token = await self.proposals_page(
                sector=sector,
                type=type,
                start_time=start_time,
                end_time=end_time,
                state=state,
                page_token=token,
            )
            found += page
            if not token:
                return found

    async def proposal(self, proposal_id: str) -> Proposal:
        response = await self._stub.GetProposal(pb.GetProposalRequest(id=proposal_id))
        return convert.proposal_from_proto(response.proposal)

    async def verify(self) -> Verification:
        response = await self._stub.VerifyLedger(pb.VerifyLedgerRequest())
        return convert.verification_from_proto(response)

    async def pulse(self) -> Pulse:
        response = await self._stub.GetPulse(pb.GetPulseRequest())
        return convert.pulse_from_proto(response)

    async def watch(
        self, *, after_sequence: int | None = None
    ) -> AsyncGenerator[LedgerEvent, None]:
        """The ledger's stream: every event after ``after_sequence`` once (0: from the first;
        None: only those after the subscription), then live ones. Raises the server's MeshError
        when the stream ends: ResourceExhausted for a subscriber that fell behind, Unavailable
        on drain, both with ``metadata["resume_after_sequence"]``."""
        request = pb.WatchLedgerRequest()
        if after_sequence is not None:
            request.after_sequence = after_sequence
        call = self._stub.WatchLedger(request)
        try:
            async for message in call:
                event = convert.event_from_proto(message)
                if event is not None:
                    yield event
        finally:
            call.cancel()


class PlanFeed:
    """The federation's SubscribePlans stream as the lifecycle reads it
    (:class:`meta_optimizer.follower.PlanStream`): every plan and status update, unfiltered."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(federation_pb2_grpc.FederationServiceStub, channel)

    async def watch(self, *, after_sequence: int) -> AsyncGenerator[FederationEvent, None]:
        """Every event after ``after_sequence`` (0: from the first), then live ones; ends or
        raises the federation's MeshError when the stream does."""
        call = self._stub.SubscribePlans(
            federation_pb2.SubscribePlansRequest(after_sequence=after_sequence)
        )
        try:
            async for message in call:
                yield convert.federation_event_from_proto(message)
        finally:
            call.cancel()
