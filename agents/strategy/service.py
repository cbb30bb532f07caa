"""The strategy officer's gRPC server: StrategyOfficerService (ListStrategies) and AgentService
(Recommend; ExecuteAction for ENABLE, DISABLE, REWEIGHT and PROMOTE_STRATEGY)."""

from __future__ import annotations

import asyncio

import grpc
import structlog

from agents.policy_log import OwnedPolicy, PolicyLog
from agents.strategy import _convert as convert
from agents.strategy.book import BookPolicy
from agents.strategy.config import ENV_PREFIX, StrategyConfig
from agents.strategy.engine import EXECUTES, StrategyOfficer
from agents.strategy.performance import Performance
from backtest.evaluation import MINIMUM_BARS
from market.client import MarketClient
from qtmesh.api.strategy.v1 import strategy_officer_pb2 as pb
from qtmesh.api.strategy.v1 import strategy_officer_pb2_grpc as pb_grpc
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyGenome
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service
from sesa.client import SesaClient, bar_source

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


async def build(ctx: Context[StrategyConfig]) -> Built:
    config = ctx.config
    log = await asyncio.to_thread(PolicyLog.open, config.url, name="strategy")
    book = OwnedPolicy(
        log, initial=BookPolicy(), encode=BookPolicy.to_json, decode=BookPolicy.from_json
    )
    market = ctx.client("market", MarketClient)
    officer = StrategyOfficer(
        market=market,
        evaluator=SesaShadowEvaluator(ctx.client("sesa", SesaClient), market),
        book=book,
        config=config,
    )
    await officer.start()

    async def close() -> None:
        await officer.close()
        await asyncio.to_thread(log.close)

    return Built(services=services(officer), close=close)


APP = App(
    name="strategy",
    summary="the AI Strategy Officer: enabling, disabling, reweighting, promoting strategies",
    config_type=StrategyConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=lambda config: (
        Uses(service="market", client=MarketClient, timeout=MARKET_TIMEOUT_SECONDS),
        Uses(service="sesa", client=SesaClient, timeout=config.sesa_timeout_seconds),
    ),
)
