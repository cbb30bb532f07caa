"""Async client of the alpha-reporting service, returning the domain's encrypted reports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from alpha_reporting import _convert as convert
from alpha_reporting.report import EncryptedReport, SectorReport
from qtmesh.api.alpha.v1 import alpha_reporting_pb2 as pb
from qtmesh.api.alpha.v1 import alpha_reporting_pb2_grpc as pb_grpc
from qtmesh.runtime.status import mesh_stub


class AlphaReportingClient:
    """Calls AlphaReportingService over ``channel``; failures raise the server's MeshError."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.AlphaReportingServiceStub, channel)

    async def submit(self, report: SectorReport) -> EncryptedReport:
        response = await self._stub.SubmitReport(
            pb.SubmitReportRequest(report=convert.report_to_proto(report)),
        )
        return convert.encrypted_from_proto(response.report)

    async def get(self, report_id: str) -> EncryptedReport:
        response = await self._stub.GetReport(pb.GetReportRequest(report_id=report_id))
        return convert.encrypted_from_proto(response.report)

    async def reports_page(
        self,
        *,
        sector: str = "",
        start_date: str = "",
        end_date: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[EncryptedReport], str]:
        """One page, ordered by (trading date, sector), and the next page's token."""
        response = await self._stub.ListReports(
            pb.ListReportsRequest(
                sector=sector,
                start_date=start_date,
                end_date=end_date,
                page_size=page_size,
                page_token=page_token,
            ),
        )
        return [convert.encrypted_from_proto(r) for r in response.reports], response.next_page_token

    async def reports(
        self, *, sector: str = "", start_date: str = "", end_date: str = ""
    ) -> list[EncryptedReport]:
        """Every report of the window (all pages), still encrypted."""
        found: list[EncryptedReport] = []
        token = ""
        while True:
            page, token = await self.reports_page(
                sector=sector, start_date=start_date, end_date=end_date, page_token=token
            )
            found += page
            if not token:
                return found

    async def watch(self, *, after_sequence: int | None = None) -> AsyncIterator[EncryptedReport]:
        """Every report stored after ``after_sequence`` (unset: from now on), once, then each
        new one as it is stored."""
        request = pb.WatchReportsRequest()
        if after_sequence is not None:
            request.after_sequence = after_sequence
        call = self._stub.WatchReports(request)
        try:
            async for message in call:
                yield convert.encrypted_from_proto(message.report)
        finally:
            call.cancel()
