"""The CEO's gRPC server: CeoService (GetMode) and AgentService (Recommend; ExecuteAction for
SWITCH_MODE)."""

from __future__ import annotations

import asyncio

import grpc

from agents.ceo import _convert as convert
from agents.ceo.config import ENV_PREFIX, CeoConfig
from agents.ceo.engine import EXECUTES, Ceo
from agents.ceo.mode import ModeState
from agents.policy_log import OwnedPolicy, PolicyLog
from market.client import MarketClient
from qtmesh.api.ceo.v1 import ceo_pb2 as pb
from qtmesh.api.ceo.v1 import ceo_pb2_grpc as pb_grpc
from qtmesh.base.contract import StrategicMode
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service
from world_model.client import WorldModelClient

MARKET_TIMEOUT_SECONDS = 10.0


class CeoServicer(pb_grpc.CeoServiceServicer):
    def __init__(self, ceo: Ceo) -> None:
        self._ceo = ceo

    async def GetMode(
        self, request: pb.GetModeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModeResponse:
        return convert.report_to_proto(await self._ceo.report())


def services(ceo: Ceo) -> list[Service]:
    return [
        Service.of(
            CeoServicer(ceo),
            pb_grpc.add_CeoServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["CeoService"],
        ),
        agent_service(ceo, executes=EXECUTES),
    ]


async def build(ctx: Context[CeoConfig]) -> Built:
    config = ctx.config
    log = await asyncio.to_thread(PolicyLog.open, config.url, name="ceo")
    mode = OwnedPolicy(
        log,
        initial=ModeState(StrategicMode[config.initial_mode]),
        encode=ModeState.to_json,
        decode=ModeState.from_json,
    )
    ceo = Ceo(
        market=ctx.client("market", MarketClient),
        regimes=ctx.client("world-model", WorldModelClient),
        mode=mode,
        config=config,
    )
    await ceo.start()

    async def close() -> None:
        await ceo.close()
        await asyncio.to_thread(log.close)

    return Built(services=services(ceo), close=close)


APP = App(
    name="ceo",
    summary="the AI CEO: the strategic mode, from drawdown, volatility, regime and P&L trend",
    config_type=CeoConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=lambda config: (
        Uses(service="market", client=MarketClient, timeout=MARKET_TIMEOUT_SECONDS),
        Uses(
            service="world-model",
            client=WorldModelClient,
            timeout=config.regime_timeout_seconds,
        ),
    ),
)
