"""The risk officer's gRPC server: RiskService (AssessRisk, GetLimits, ResumeTrading, which the
market's fleet executes) and AgentService (Recommend; ExecuteAction for ADJUST_RISK_LIMITS)."""

from __future__ import annotations

import asyncio

import grpc

from agents.policy_log import OwnedPolicy, PolicyLog
from agents.risk import _convert as convert
from agents.risk.config import ENV_PREFIX, RiskConfig
from agents.risk.engine import EXECUTES, RiskOfficer
from agents.risk.limits import PORTFOLIO, Halt, RiskPolicy
from market.client import MarketClient
from qtmesh.api.risk.v1 import risk_pb2 as pb
from qtmesh.api.risk.v1 import risk_pb2_grpc as pb_grpc
from qtmesh.base.convert import limits_to_proto
from qtmesh.runtime.agent_service import AgentClient, agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service

MARKET_TIMEOUT_SECONDS = 10.0


class RiskServicer(pb_grpc.RiskServiceServicer):
    def __init__(self, officer: RiskOfficer) -> None:
        self._officer = officer

    async def AssessRisk(
        self, request: pb.AssessRiskRequest, context: grpc.aio.ServicerContext
    ) -> pb.AssessRiskResponse:
        returns = {
            sector: (list(series.returns), series.exposure)
            for sector, series in request.sector_returns.items()
        }
        report = await self._officer.assess(returns or None)
        return pb.AssessRiskResponse(report=convert.report_to_proto(report))

    async def GetLimits(
        self, request: pb.GetLimitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLimitsResponse:
        halts = await self._officer.current_halts()
        return _limits_response(self._officer.policy, halts)

    async def ResumeTrading(
        self, request: pb.ResumeTradingRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeTradingResponse:
        resumed = await self._officer.resume(request.scope, request.reason)
        return pb.ResumeTradingResponse(
            resumed=resumed, halts=[convert.halt_to_proto(h) for h in self._officer.halts]
        )


def _limits_response(policy: RiskPolicy, halts: tuple[Halt, ...]) -> pb.GetLimitsResponse:
    return pb.GetLimitsResponse(
        limits=limits_to_proto(policy.limits),
        trading_halted=any(h.scope == PORTFOLIO for h in halts),
        halts=[convert.halt_to_proto(h) for h in halts],
    )


def services(officer: RiskOfficer) -> list[Service]:
    return [
        Service.of(
            RiskServicer(officer),
            pb_grpc.add_RiskServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["RiskService"],
        ),
        agent_service(officer, executes=EXECUTES),
    ]


async def build(ctx: Context[RiskConfig]) -> Built:
    config = ctx.config
    log = await asyncio.to_thread(PolicyLog.open, config.url, name="risk")
    policy = OwnedPolicy(
        log,
        initial=RiskPolicy(config.limits),
        encode=RiskPolicy.to_json,
        decode=RiskPolicy.from_json,
    )
    officer = RiskOfficer(
        market=ctx.client("market", MarketClient),
        policy=policy,
        config=config,
        fleet=ctx.client("market", AgentClient),
    )
    await officer.start()
    ctx.metrics.read(
        "qtmesh_trading_halted",
        "1 while the fleet's kill switch holds on the portfolio or a sector, as the risk "
        "officer last read the fleet; 0 otherwise",
        lambda: float(bool(officer.halts)),
    )

    async def close() -> None:
        await officer.close()
        await asyncio.to_thread(log.close)

    return Built(services=services(officer), close=close)


APP = App(
    name="risk",
    summary="the AI Risk Officer: VaR/CVaR, exposure and drawdown limits, kill switch",
    config_type=RiskConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=(
        Uses(service="market", client=MarketClient, timeout=MARKET_TIMEOUT_SECONDS),
        Uses(
            service="market",
            client=lambda channel: AgentClient(channel, name="market"),
            timeout=MARKET_TIMEOUT_SECONDS,
        ),
    ),
)
