"""The strategy officer's gRPC server: StrategyOfficerService (ListStrategies) and AgentService
(Recommend; ExecuteAction for ENABLE, DISABLE, REWEIGHT and PROMOTE_STRATEGY)."""

from __future__ import annotations

import asyncio

import grpc
import structlog

from agents.contract import StrategyGenome
from agents.policy_log import OwnedPolicy, PolicyLog
from agents.service import agent_service
from agents.strategy import _convert as convert
from agents.strategy.book import BookPolicy
from agents.strategy.config import ENV_PREFIX, StrategyConfig
from agents.strategy.engine import EXECUTES, StrategyOfficer
from agents.strategy.performance import Performance
from market.client import MarketClient
from qtmesh.api.strategy.v1 import strategy_officer_pb2 as pb
from qtmesh.api.strategy.v1 import strategy_officer_pb2_grpc as pb_grpc
from qtmesh.app import App, Built
from qtmesh.catalog import DEFAULT_PORTS
from qtmesh.channels import ChannelConfig, open_channel
from qtmesh.errors import InvalidArgument
from qtmesh.server import Service
from sesa.client import SesaClient, bar_source
from sesa.evaluation import MINIMUM_BARS

MARKET_TIMEOUT_SECONDS = 10.0

_log = structlog.get_logger("agents.strategy")
# The field the market names when a start lies after its clock.
_NO_BARS_YET = frozenset({"start_time"})


class SesaShadowEvaluator:
    """Evaluates a genome with SESA on the bars its symbol had after a market time."""

    def __init__(self, sesa: SesaClient, market: MarketClient) -> None:
        self._sesa = sesa
        self._market = market

    async def evaluate(
        self, genome: StrategyGenome, *, symbol: str, since: int, trials: int
    ) -> Performance | None:
        try:
            bars = await self._market.bars(symbol, start_time=since + 1)
        except InvalidArgument as exc:
            # The market refuses a start after its clock: no bar after ``since`` yet. Anything
            # else is a real problem with the request, kept visible rather than read as "wait".
            if exc.field not in _NO_BARS_YET:
                _log.warning(
                    "shadow bars refused", symbol=symbol, field=exc.field, problem=exc.problem
                )
            return None
        if len(bars) < MINIMUM_BARS:
            return None
        (evaluation,) = await self._sesa.evaluate(
            [genome], bars=bar_source(bars=bars), trials=trials
        )
        return convert.performance_from_evaluation(evaluation)


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


async def build(config: StrategyConfig, channels: ChannelConfig) -> Built:
    log = await asyncio.to_thread(PolicyLog.open, config.url, name="strategy")
    book = OwnedPolicy(
        log, initial=BookPolicy(), encode=BookPolicy.to_json, decode=BookPolicy.from_json
    )
    market_channel = open_channel(channels.address_of("market", DEFAULT_PORTS["market"]), channels)
    sesa_channel = open_channel(channels.address_of("sesa", DEFAULT_PORTS["sesa"]), channels)
    market = MarketClient(market_channel, timeout=MARKET_TIMEOUT_SECONDS)
    officer = StrategyOfficer(
        market=market,
        evaluator=SesaShadowEvaluator(
            SesaClient(sesa_channel, timeout=config.sesa_timeout_seconds), market
        ),
        book=book,
        config=config,
    )
    await officer.start()

    async def close() -> None:
        await officer.close()
        await market_channel.close()
        await sesa_channel.close()
        await asyncio.to_thread(log.close)

    return Built(services=services(officer), close=close)


APP = App(
    name="strategy",
    summary="the AI Strategy Officer: enabling, disabling, reweighting, promoting strategies",
    config_type=StrategyConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    depends_on=("market", "sesa"),
)
