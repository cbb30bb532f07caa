"""Async client of the meta optimizer, returning the same domain objects as its engine."""

from __future__ import annotations

import grpc

from metaopt import _convert as convert
from metaopt.audit import ProposalType
from metaopt.engine import Pulse
from metaopt.ledger import Cycle, Proposal, Verification
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2 as pb
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2_grpc as pb_grpc
from qtmesh.convert import enum_to_proto, timestamp
from qtmesh.status import raising_mesh_errors


class MetaOptimizerClient:
    """Calls MetaOptimizerService over ``channel``; failures raise the server's MeshError."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = 30.0) -> None:
        self._stub = pb_grpc.MetaOptimizerServiceStub(channel)
        self._timeout = timeout

    async def run_cycle(self, *, start_date: str = "", end_date: str = "") -> Cycle:
        with raising_mesh_errors():
            response = await self._stub.RunOptimizationCycle(
                pb.RunOptimizationCycleRequest(start_date=start_date, end_date=end_date),
                timeout=self._timeout,
            )
        return convert.cycle_from_proto(response.cycle)

    async def proposals_page(
        self,
        *,
        sector: str = "",
        type: ProposalType | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Proposal], str]:
        """One page of the ledger, oldest first, and the next page's token."""
        request = pb.ListProposalsRequest(
            sector=sector,
            type=enum_to_proto(pb.ProposalType, type) if type else 0,
            page_size=page_size,
            page_token=page_token,
        )
        if start_time is not None:
            request.start_time.CopyFrom(timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(timestamp(end_time))
        with raising_mesh_errors():
            response = await self._stub.ListProposals(request, timeout=self._timeout)
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
    ) -> list[Proposal]:
        """The proposal history (the spec's get_proposal_history), every page."""
        found: list[Proposal] = []
        token = ""
        while True:
            page, token = await self.proposals_page(
                sector=sector, type=type, start_time=start_time, end_time=end_time, page_token=token
            )
            found += page
            if not token:
                return found

    async def proposal(self, proposal_id: str) -> Proposal:
        with raising_mesh_errors():
            response = await self._stub.GetProposal(
                pb.GetProposalRequest(id=proposal_id), timeout=self._timeout
            )
        return convert.proposal_from_proto(response.proposal)

    async def verify(self) -> Verification:
        with raising_mesh_errors():
            response = await self._stub.VerifyLedger(
                pb.VerifyLedgerRequest(), timeout=self._timeout
            )
        return convert.verification_from_proto(response)

    async def pulse(self) -> Pulse:
        with raising_mesh_errors():
            response = await self._stub.GetPulse(pb.GetPulseRequest(), timeout=self._timeout)
        return convert.pulse_from_proto(response)
