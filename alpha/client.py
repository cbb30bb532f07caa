"""Async client of the alpha-reporting service, returning the domain's encrypted reports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from alpha import _convert as convert
from alpha.report import EncryptedReport, SectorReport
from qtmesh.api.alpha.v1 import alpha_reporting_pb2 as pb
from qtmesh.api.alpha.v1 import alpha_reporting_pb2_grpc as pb_grpc
from qtmesh.status import raising_mesh_errors


class AlphaClient:
    """Calls AlphaReportingService over ``channel``; failures raise the server's MeshError."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = 30.0) -> None:
        self._stub = pb_grpc.AlphaReportingServiceStub(channel)
        self._timeout = timeout

    async def submit(self, report: SectorReport) -> EncryptedReport:
        with raising_mesh_errors():
            response = await self._stub.SubmitReport(
                pb.SubmitReportRequest(report=convert.report_to_proto(report)),
                timeout=self._timeout,
            )
        return convert.encrypted_from_proto(response.report)

    async def get(self, report_id: str) -> EncryptedReport:
        with raising_mesh_errors():
            response = await self._stub.GetReport(
                pb.GetReportRequest(report_id=report_id), timeout=self._timeout
            )
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
        with raising_mesh_errors():
            response = await self._stub.ListReports(
                pb.ListReportsRequest(
                    sector=sector,
                    start_date=start_date,
                    end_date=end_date,
                    page_size=page_size,
                    page_token=page_token,
                ),
                timeout=self._timeout,
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
            with raising_mesh_errors():
                async for message in call:
                    yield convert.encrypted_from_proto(message.report)
        finally:
            call.cancel()
