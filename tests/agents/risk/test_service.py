"""The risk officer over gRPC, reading a real market server: hourly tail risk of the paper fleet,
caller-given returns, a breach past the halt margin turned into a critical halt that the market
executes, re-asserted while the breach stands and resumed once it has cleared, the operator's
ResumeTrading forwarded to the market's fleet, the limits it owns (once per key, across
restarts), and bad requests."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import grpc
import numpy as np
import pytest
from scipy import stats

from agents.risk.client import RiskClient
from agents.risk.config import RiskConfig
from agents.risk.service import APP
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from qtmesh.api.risk.v1 import risk_pb2, risk_pb2_grpc
from qtmesh.base.config import Secret
from qtmesh.base.contract import (
    Action,
    AdjustRiskLimits,
    AgentContext,
    Execution,
    ExecutionState,
    HaltTrading,
    Priority,
    Recommendation,
    ResumeTrading,
    RiskLimits,
    StrategicMode,
    SwitchMode,
)
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app

HOUR = 3600 * 10**9


def risk_config(tmp_path: Path, **overrides) -> RiskConfig:
    return RiskConfig(data_dir=tmp_path / "risk", min_observations=5, **overrides)


@contextlib.asynccontextmanager
async def market_server(tmp_path: Path):
    config = MarketConfig(
        synthetic_days=3, seed=5, data_dir=tmp_path / "market", fleet_warmup_bars=600
    )
    async with serving_app(MARKET, config) as market:
        yield market


@contextlib.asynccontextmanager
async def risk_server(market, config: RiskConfig):
    channels = ChannelConfig(addresses={"market": market.address})
    async with serving_app(APP, config, channel_config=channels) as risk:
        yield risk


def action(key: str, parameters, *, action_id: str = "a1") -> Action:
    return Action(
        id=action_id,
        priority=Priority.CRITICAL,
        target="risk",
        parameters=parameters,
        confidence=0.9,
        rationale="test",
        idempotency_key=key,
    )


def executed(r: Recommendation, key: str) -> Action:
    """A recommendation as the federation hands it to its owner (the market, for halts)."""
    return Action(
        id=r.id,
        priority=r.priority,
        target=r.target,
        parameters=r.parameters,
        confidence=r.confidence,
        rationale=r.rationale,
        source_agents=("risk",),
        owner="market",
        idempotency_key=key,
    )


async def test_the_fleet_report_holds_hourly_tail_risk_of_the_portfolio_and_each_sector(tmp_path):
    async with (
        market_server(tmp_path) as market,
        risk_server(market, risk_config(tmp_path)) as risk,
    ):
        client = MarketClient(market.channel)
        await client.advance(12 * 60 + 30)
        report = await RiskClient(risk.channel).assess()
        fleet = await client.fleet()
        assert report.observations == 12
        assert report.horizon == HOUR
        assert report.market_position == fleet.position
        assert report.as_of_time == fleet.clock_time
        # The same hourly windows, read from the market directly: exactly numpy's quantile.
        windows = [
            await client.fleet(
                start_time=fleet.deployment_time + k * HOUR + 1,
                end_time=fleet.deployment_time + (k + 1) * HOUR,
            )
            for k in range(12)
        ]
        portfolio = np.array([w.total_return for w in windows])
        assert report.portfolio.historical_var_95 == -np.quantile(portfolio, 0.05)
        assert report.portfolio.parametric_var_99 == pytest.approx(
            stats.norm.ppf(0.99) * np.std(portfolio, ddof=1) - np.mean(portfolio), rel=1e-12
        )
        assert [s.sector for s in report.sectors] == ["Crypto", "Energy", "Financials", "Tech"]
        for k, sector in enumerate(report.sectors):
            returns = np.array([w.sectors[k].roi for w in windows])
            assert sector.tail.historical_var_99 == -np.quantile(returns, 0.01)
            assert sector.allocation == 0.25
            assert sector.exposure == fleet.sectors[k].gross_exposure
            assert sector.exposure_limit == 0.35
            assert sector.equity_var_95 == pytest.approx(0.25 * sector.tail.historical_var_95)
        assert report.gross_exposure == pytest.approx(sum(s.gross_exposure for s in fleet.sectors))
        assert 0 <= report.drawdown < 0.05
        assert not report.trading_halted


async def test_caller_returns_of_a_known_normal_distribution(tmp_path):
    mu, sigma = 0.0001, 0.004
    returns = np.random.default_rng(11).normal(mu, sigma, 20_000)
    async with (
        market_server(tmp_path) as market,
        risk_server(market, risk_config(tmp_path)) as risk,
    ):
        report = await RiskClient(risk.channel).assess({"Tech": (returns, 1.0)})
    assert report.observations == 20_000
    assert report.horizon == 0
    assert report.market_position == 0
    assert report.portfolio.historical_var_95 == -np.quantile(returns, 0.05)
    for c, var, cvar in (
        (0.95, report.portfolio.parametric_var_95, report.portfolio.parametric_cvar_95),
        (0.99, report.portfolio.parametric_var_99, report.portfolio.parametric_cvar_99),
    ):
        z = stats.norm.ppf(c)
        assert var == pytest.approx(z * sigma - mu, rel=0.02)
        assert cvar == pytest.approx(sigma * stats.norm.pdf(z) / (1 - c) - mu, rel=0.02)
        assert report.portfolio.historical_var_99 == pytest.approx(
            stats.norm.ppf(0.99) * sigma - mu, rel=0.05
        )
    (tech,) = report.sectors
    assert tech.exposure == 1.0
    assert [b.limit for b in report.breaches] == [
        "max_var_95",
        "sector_exposure/Tech",
        "sector_var_95/Tech",
    ]


@pytest.mark.parametrize(
    ("series", "field"),
    [
        ({"Tech": risk_pb2.ReturnSeries()}, "sector_returns[Tech].returns"),
        (
            {"Tech": risk_pb2.ReturnSeries(returns=[0.01] * 9 + [float("nan")], exposure=1)},
            "sector_returns[Tech].returns[9]",
        ),
        ({"Mining": risk_pb2.ReturnSeries(returns=[0.01] * 10)}, "sector_returns[Mining]"),
        (
            {
                "Tech": risk_pb2.ReturnSeries(returns=[0.01] * 10),
                "Energy": risk_pb2.ReturnSeries(returns=[0.01] * 11),
            },
            "sector_returns[Tech].returns",
        ),
        (
            {"Tech": risk_pb2.ReturnSeries(returns=[0.01] * 10, exposure=-1)},
            "sector_returns[Tech].exposure",
        ),
    ],
)
async def test_bad_returns_are_invalid_arguments_naming_the_field(tmp_path, series, field):
    async with (
        market_server(tmp_path) as market,
        risk_server(market, risk_config(tmp_path)) as risk,
    ):
        stub = risk_pb2_grpc.RiskServiceStub(risk.channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.AssessRisk(risk_pb2.AssessRiskRequest(sector_returns=series))
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(error.value).metadata["field"] == field
        # The server keeps serving.
        assert (await RiskClient(risk.channel).assess()).sectors


async def test_a_breached_limit_becomes_a_critical_halt_with_the_numbers(tmp_path):
    async with (
        market_server(tmp_path) as market,
        risk_server(market, risk_config(tmp_path)) as risk,
    ):
        await MarketClient(market.channel).advance(10 * 60)
        agent = AgentClient(risk.channel, name="risk")
        before = await RiskClient(risk.channel).assess()
        assert before.breaches == ()
        assert await agent.recommend(AgentContext(cycle_id="c0")) == []
        var = before.portfolio.historical_var_95
        result = await agent.execute(
            action("plan-1/limits", AdjustRiskLimits(RiskLimits(max_var_95=var / 2))),
            plan_sequence=1,
        )
        assert result.applied
        assert result.detail.startswith("limits: max_var_95 0.40% -> ")
        (halt,) = await agent.recommend(AgentContext(cycle_id="c1"))
        assert halt.priority is Priority.CRITICAL
        assert halt.parameters == HaltTrading(scope="portfolio")
        assert f"historical VaR95 per 1 h {var:.2%} is 100% over its {var / 2:.2%} limit" in (
            halt.rationale
        )
        assert halt.confidence == pytest.approx(10 / 15)  # 10 returns, 5 needed
        report = await RiskClient(risk.channel).assess()
        assert report.breaches[0].limit == "max_var_95"
        assert report.limits.max_var_95 == pytest.approx(var / 2)


async def test_a_halt_the_market_executes_stands_while_its_breach_does_then_is_resumed(tmp_path):
    # A lookback of five hourly returns, so the periods before the halt leave it within hours.
    config = risk_config(tmp_path, lookback_periods=5)
    async with (
        market_server(tmp_path) as market,
        risk_server(market, config) as risk,
    ):
        markets = MarketClient(market.channel)
        fleet_agent = AgentClient(market.channel, name="market")
        agent = AgentClient(risk.channel, name="risk")
        client = RiskClient(risk.channel)
        await markets.advance(10 * 60)
        var = (await client.assess()).portfolio.historical_var_95
        assert var > 0
        limits = AdjustRiskLimits(RiskLimits(max_var_95=var / 2))
        assert (await agent.execute(action("plan-1/limits", limits), plan_sequence=1)).applied

        # 100% over the limit, past the 25% halt margin: a critical halt of the portfolio.
        (halt,) = await agent.recommend(AgentContext(cycle_id="c1"))
        assert halt.parameters == HaltTrading(scope="portfolio")
        assert halt.priority is Priority.CRITICAL
        halted_at = (await markets.fleet()).clock_time
        assert halt.as_of_time == halted_at
        result = await fleet_agent.execute(executed(halt, "plan-2/halt"), plan_sequence=2)
        assert "portfolio halted" in result.detail

        # The officer reads the halt from the fleet at its next refresh and re-asserts it, one
        # intent for the halt, while the breach stands.
        report = await client.assess()
        assert [(h.scope, h.since, h.action_id) for h in report.halts] == [
            ("portfolio", halted_at, halt.id)
        ]
        assert report.trading_halted
        assert "max_var_95" in [b.limit for b in report.breaches]
        (standing,) = await agent.recommend(AgentContext(cycle_id="c2"))
        assert standing.parameters == HaltTrading(scope="portfolio")
        assert standing.intent_key == f"halt/portfolio/{halted_at}"
        assert standing.confidence == 1.0
        await markets.advance(60)
        report = await client.assess()
        assert report.breaches
        (again,) = await agent.recommend(AgentContext(cycle_id="c3"))
        assert again.parameters == HaltTrading(scope="portfolio")
        assert again.intent_key == standing.intent_key
        fleet = await markets.fleet()
        assert fleet.halted == frozenset({"portfolio"})
        assert all(s.gross_exposure == 0 for s in fleet.sectors)

        # Flat since the halt: once the lookback holds only flat hours, nothing is breached and
        # the officer recommends resuming.
        await markets.advance(6 * 60)
        report = await client.assess()
        assert report.observations == 5
        assert report.breaches == ()
        assert report.portfolio.historical_var_95 == 0
        (resume,) = await agent.recommend(AgentContext(cycle_id="c4"))
        assert resume.parameters == ResumeTrading(scope="portfolio")
        assert resume.priority is Priority.HIGH
        assert resume.intent_key == f"resume/portfolio/{halted_at}"
        assert resume.confidence == 1.0
        result = await fleet_agent.execute(executed(resume, "plan-5/resume"), plan_sequence=5)
        assert "portfolio resumed" in result.detail
        assert (await markets.fleet()).halted == frozenset()
        report = await client.assess()
        assert report.halts == ()
        assert await agent.recommend(AgentContext(cycle_id="c5")) == []


async def test_the_operators_resume_trading_resumes_the_fleet(tmp_path):
    async with (
        market_server(tmp_path) as market,
        risk_server(market, risk_config(tmp_path)) as risk,
    ):
        markets = MarketClient(market.channel)
        fleet_agent = AgentClient(market.channel, name="market")
        client = RiskClient(risk.channel)
        await markets.advance(60)
        halted = await fleet_agent.execute(
            action("plan-2/halt", HaltTrading(scope="Crypto"), action_id="h1"), plan_sequence=2
        )
        assert "Crypto halted" in halted.detail
        policy, halts = await client.limits()
        assert policy.limits == RiskConfig(min_observations=5).limits
        assert [(h.scope, h.action_id) for h in halts] == [("Crypto", "h1")]
        assert halts[0].reason.startswith("fleet change 1: Crypto halted")
        stub = risk_pb2_grpc.RiskServiceStub(risk.channel)
        assert not (await stub.GetLimits(risk_pb2.GetLimitsRequest())).trading_halted
        with pytest.raises(InvalidArgument) as error:
            await client.resume("Crypto", " ")
        assert error.value.field == "reason"
        with pytest.raises(InvalidArgument) as error:
            await client.resume("", "why")
        assert error.value.field == "scope"
        assert await client.resume("Crypto", "the desk checked the feed") == (True, ())
        fleet = await markets.fleet()
        assert fleet.halted == frozenset()
        resumed = fleet.changes[-1]
        assert resumed.halted == frozenset()
        assert resumed.cause.action_id.startswith("operator-resume-")
        assert "Crypto resumed" in resumed.detail
        assert await client.resume("Crypto", "again") == (False, ())
        assert len((await markets.fleet()).changes) == 2  # nothing sent to the fleet

        # The portfolio: halted through the market, resumed by the operator.
        await fleet_agent.execute(action("plan-3/halt", HaltTrading()), plan_sequence=3)
        # GetLimits reads the fleet's halts as they are now.
        assert (await stub.GetLimits(risk_pb2.GetLimitsRequest())).trading_halted
        resumed, left = await client.resume("portfolio", "limits reviewed")
        assert (resumed, left) == (True, ())
        assert (await markets.fleet()).halted == frozenset()
        _, halts = await client.limits()
        assert halts == ()


async def test_the_limits_survive_a_restart_and_apply_once_and_the_halts_are_the_fleets(
    tmp_path,
):
    config = risk_config(tmp_path)
    async with market_server(tmp_path) as market:
        async with risk_server(market, config) as risk:
            agent = AgentClient(risk.channel, name="risk")
            limits = AdjustRiskLimits(RiskLimits(max_drawdown=0.08))
            result = await agent.execute(action("plan-2/limits", limits), plan_sequence=2)
            assert result.applied
            assert result.detail.startswith("limits: max_drawdown 5.00% -> 8.00% (the fleet")
        await AgentClient(market.channel, name="market").execute(
            action("plan-3/halt", HaltTrading(scope="Crypto"), action_id="h1"), plan_sequence=3
        )
        async with risk_server(market, config) as risk:
            agent = AgentClient(risk.channel, name="risk")
            policy, halts = await RiskClient(risk.channel).limits()
            assert policy.limits.max_drawdown == 0.08
            # The halt was executed by the market while the officer was down: it reads it.
            assert [h.scope for h in halts] == ["Crypto"]
            again = await agent.execute(action("plan-2/limits", limits), plan_sequence=2)
            assert not again.applied
            assert "already applied as change 1" in again.detail
            known = await agent.execution("plan-2/limits")
            assert known == Execution(ExecutionState.APPLIED, result.detail)
            assert (await agent.execution("plan-9/limits")).state is ExecutionState.NOT_APPLIED
            recommendations = await agent.recommend(AgentContext(cycle_id="c2"))
            assert [(r.target, r.parameters) for r in recommendations] == [
                ("sector/Crypto", HaltTrading(scope="Crypto"))
            ]


async def test_it_executes_only_its_actions_and_rejects_bad_limits(tmp_path):
    async with (
        market_server(tmp_path) as market,
        risk_server(market, risk_config(tmp_path)) as risk,
    ):
        agent = AgentClient(risk.channel, name="risk")
        # The kill switch is the market fleet's to execute.
        for parameters in (
            SwitchMode(mode=StrategicMode.DEFENSIVE),
            HaltTrading(scope="portfolio"),
            ResumeTrading(scope="portfolio"),
        ):
            with pytest.raises(InvalidArgument) as error:
                await agent.execute(action("k1", parameters), plan_sequence=1)
            assert error.value.field == "action.type"
        for limits, field in (
            (RiskLimits(max_drawdown=2.0), "limits.max_drawdown"),
            (RiskLimits(sector_exposure_limits={"Mining": 0.1}), "sector_exposure_limits[Mining]"),
        ):
            with pytest.raises(InvalidArgument) as error:
                await agent.execute(action("k2", AdjustRiskLimits(limits)), plan_sequence=1)
            assert error.value.field.endswith(field)
        policy, halts = await RiskClient(risk.channel).limits()
        assert policy.limits.max_drawdown == 0.05
        assert halts == ()
        assert (await MarketClient(market.channel).fleet()).halted == frozenset()


async def test_recommend_answers_without_a_market_and_assess_says_it_is_unavailable(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    channels = ChannelConfig(addresses={"market": dead}, retry_unavailable=False)
    async with serving_app(APP, risk_config(tmp_path), channel_config=channels) as risk:
        agent = AgentClient(risk.channel, name="risk")
        assert await agent.recommend(AgentContext(cycle_id="c1", market_position=5)) == []
        with pytest.raises(Unavailable):
            await RiskClient(risk.channel).assess()


async def test_limits_persist_in_either_database(tmp_path, database_url):
    config = RiskConfig(database_url=Secret(database_url), min_observations=5)
    limits = AdjustRiskLimits(RiskLimits(max_var_95=0.01, sector_exposure_limits={"Tech": 0.2}))
    async with market_server(tmp_path) as market:
        async with risk_server(market, config) as risk:
            agent = AgentClient(risk.channel, name="risk")
            assert (await agent.execute(action("p1/limits", limits), plan_sequence=1)).applied
        async with risk_server(market, config) as risk:
            policy, _ = await RiskClient(risk.channel).limits()
            assert policy.limits.max_var_95 == 0.01
            assert dict(policy.limits.sector_exposure_limits) == {"Tech": 0.2}
            again = await AgentClient(risk.channel, name="risk").execute(
                action("p1/limits", limits), plan_sequence=1
            )
            assert not again.applied


async def test_the_trading_halted_gauge_follows_the_fleets_kill_switch(tmp_path):
    async with (
        market_server(tmp_path) as market,
        risk_server(market, risk_config(tmp_path)) as risk,
    ):
        fleet_agent = AgentClient(market.channel, name="market")
        stub = risk_pb2_grpc.RiskServiceStub(risk.channel)

        def halted() -> float | None:
            return risk.server.metrics.registry.get_sample_value("qtmesh_trading_halted")

        async def limits() -> risk_pb2.GetLimitsResponse:
            # GetLimits reads the fleet first: the gauge then shows what it answered.
            return await stub.GetLimits(risk_pb2.GetLimitsRequest())

        await MarketClient(market.channel).advance(60)
        assert not (await limits()).trading_halted
        assert halted() == 0
        # A sector's halt is a halt too, though the other sectors trade on.
        await fleet_agent.execute(
            action("plan-2/halt", HaltTrading(scope="Crypto"), action_id="h1"), plan_sequence=2
        )
        response = await limits()
        assert [h.scope for h in response.halts] == ["Crypto"]
        assert not response.trading_halted
        assert halted() == 1
        await fleet_agent.execute(
            action("plan-3/halt", HaltTrading(scope="portfolio"), action_id="h2"), plan_sequence=3
        )
        assert (await limits()).trading_halted
        assert halted() == 1
        # The officer reads the fleet again once the operator's resume is executed.
        resumed, halts = await RiskClient(risk.channel).resume("portfolio", "the desk checked")
        assert resumed
        assert halts == ()
        assert halted() == 0
