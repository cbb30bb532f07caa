"""The strategy officer's gRPC server: StrategyOfficerService (ListStrategies) and AgentService
(Recommend; it executes nothing: the market's fleet executes the strategy actions)."""

from __future__ import annotations

import grpc
import structlog

from agents.strategy import _convert as convert
from agents.strategy.config import ENV_PREFIX, StrategyConfig
from agents.strategy.engine import EXECUTES, StrategyOfficer
from market.client import MarketClient
from meta.client import MetaClient
from qtmesh.api.strategy.v1 import strategy_officer_pb2 as pb
from qtmesh.api.strategy.v1 import strategy_officer_pb2_grpc as pb_grpc
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service

MARKET_TIMEOUT_SECONDS = 10.0
META_TIMEOUT_SECONDS = 5.0

_log = structlog.get_logger("agents.strategy")
# The field the market names when a start lies after its clock.
_NO_BARS_YET = frozenset({"start_time"})


class StrategyOfficerServicer(pb_grpc.StrategyOfficerServiceServicer):
    def __init__(self, officer: StrategyOfficer) -> None:
        self._officer = officer

    async def ListStrategies(
        self, request: pb.ListStrategiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStrategiesResponse:
        rows, token = await self._officer.list(
            sector=request.sector, size=request.page_size, token=request.page_token
        )
        return pb.ListStrategiesResponse(
            strategies=[convert.record_to_proto(entry, p) for entry, p in rows],
            next_page_token=token,
        )


def services(officer: StrategyOfficer) -> list[Service]:
    return [
        Service.of(
            StrategyOfficerServicer(officer),
            pb_grpc.add_StrategyOfficerServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["StrategyOfficerService"],
        ),
        agent_service(officer, executes=EXECUTES),
    ]


async def build(ctx: Context[StrategyConfig]) -> Built:
    officer = StrategyOfficer(
        market=ctx.client("market", MarketClient),
        config=ctx.config,
        meta=ctx.client("meta", MetaClient),
    )
    await officer.start()
    return Built(services=services(officer), close=officer.close)


APP = App(
    name="strategy",
    summary="the AI Strategy Officer: recommends enabling, disabling, reweighting, promoting",
    config_type=StrategyConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=lambda config: (
        Uses(service="market", client=MarketClient, timeout=MARKET_TIMEOUT_SECONDS),
        # Meta's strategy weights tilt reweighting; a meta away keeps the last ones read.
        Uses(
            service="meta", client=MetaClient, timeout=META_TIMEOUT_SECONDS, retry_unavailable=False
        ),
    ),
)
