"""The AgentService adapters: every action kind round-trips, execution is idempotent, bad input
and misbehaving agents are reported with the right status."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from qtmesh.api.agent.v1 import agent_pb2, agent_pb2_grpc
from qtmesh.base import contract as c
from qtmesh.base.errors import InvalidArgument, MeshError
from qtmesh.base.genome import StrategyFamily, StrategyGenome
from qtmesh.runtime.agent_service import AgentClient, AgentServicer, agent_service
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving

GENOME = StrategyGenome(
    id="ma-1", family=StrategyFamily.MA_CROSSOVER, parameters={"fast": 10.0, "slow": 50.0}
)
EVERY_KIND: list[c.ActionParameters] = [
    c.HaltTrading(scope="Crypto"),
    c.AdjustExposure(sector="Tech", factor=1.2),
    c.AdjustRiskLimits(limits=c.RiskLimits(max_drawdown=0.2, sector_exposure_limits={"Tech": 0.3})),
    c.SwitchMode(mode=c.StrategicMode.DEFENSIVE),
    c.EnableStrategy(strategy_id="ma-1", sector="Tech", genome=GENOME, weight=0.1),
    c.DisableStrategy(strategy_id="ma-2"),
    c.ReweightStrategies(weights={"ma-1": 0.7, "ma-3": 0.3}),
    c.PromoteStrategy(strategy_id="ma-1", genome=GENOME, sector="Tech"),
    c.RunEvolution(symbols=("ORBT",), generations=5),
    c.TuneLearning(parameters={"rl_exploration_rate": 0.2}, retrain_models=True),
    c.SpawnArbMission(long_sector="Tech", short_sector="Energy", allocation=0.05),
    c.ResumeTrading(scope="portfolio"),
]


class RecordingAgent:
    name = "recorder"

    def __init__(self, recommendations: list[c.Recommendation]) -> None:
        self.recommendations = recommendations
        self.contexts: list[c.AgentContext] = []
        self.executed: list[c.Action] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        self.contexts.append(context)
        return self.recommendations

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        await self.gate.wait()
        self.executed.append(action)
        return c.ExecutionResult(
            True,
            f"did {action.action_type.name} for plan {plan_sequence}",
            {"plan": str(plan_sequence)},
        )


def _recommendations() -> list[c.Recommendation]:
    return [
        c.Recommendation(
            id=f"r{i}",
            priority=c.Priority(1 + i % 4),
            target=f"target-{i}",
            parameters=p,
            confidence=0.5 + i / 40,
            rationale=f"because {i}",
            depends_on=("r0",) if i else (),
            evidence={"x": float(i)},
            as_of_time=1_000_000 * i,
        )
        for i, p in enumerate(EVERY_KIND)
    ]


def _action(key: str, parameters: c.ActionParameters = EVERY_KIND[1]) -> c.Action:
    return c.Action(
        id="a1",
        priority=c.Priority.HIGH,
        target="sector/Tech",
        parameters=parameters,
        confidence=0.8,
        rationale="scale up",
        idempotency_key=key,
    )


async def test_every_action_kind_round_trips_through_recommend():
    agent = RecordingAgent(_recommendations())
    async with serving([agent_service(agent)]) as running:
        client = AgentClient(running.channel, name="recorder")
        context = c.AgentContext(cycle_id="cycle-9", as_of_time=123_000, hints={"mode": "normal"})
        received = await client.recommend(context)
    assert received == agent.recommendations
    assert agent.contexts == [context]
    assert {r.action_type for r in received} == set(c.ActionType)


async def test_execution_is_idempotent_per_key():
    agent = RecordingAgent([])
    async with serving([agent_service(agent, executes=[c.ActionType.ADJUST_EXPOSURE])]) as running:
        client = AgentClient(running.channel, name="recorder")
        first = await client.execute(_action("k-1"), plan_sequence=4)
        again = await client.execute(_action("k-1"), plan_sequence=4)
        other = await client.execute(_action("k-2"), plan_sequence=5)
    assert first.applied
    assert first.outcome == {"plan": "4"}
    assert not again.applied
    assert again.detail == "already applied: did ADJUST_EXPOSURE for plan 4"
    assert again.outcome == {"plan": "4"}
    assert other.applied
    assert [a.idempotency_key for a in agent.executed] == ["k-1", "k-2"]


async def test_a_key_executing_concurrently_is_applied_once():
    agent = RecordingAgent([])
    agent.gate.clear()
    servicer = AgentServicer(agent, executes=[c.ActionType.ADJUST_EXPOSURE])
    first = asyncio.ensure_future(servicer._execute_once("k", _action("k"), 1))
    second = asyncio.ensure_future(servicer._execute_once("k", _action("k"), 1))
    await asyncio.sleep(0)  # virtual time: both coroutines have now run up to their first wait
    assert not first.done()
    assert not second.done()
    agent.gate.set()
    results = await asyncio.gather(first, second)
    assert [r.applied for r in results] == [True, False]
    assert len(agent.executed) == 1


class RecordKeepingAgent(RecordingAgent):
    """Answers GetExecution from a record of its own (as a durable store would, after a
    restart that emptied the servicer's memory)."""

    def __init__(self) -> None:
        super().__init__([])
        self.record: dict[str, str] = {}
        self.entered = asyncio.Event()

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        self.entered.set()
        return await super().execute(action, plan_sequence=plan_sequence)

    async def execution(self, idempotency_key: str) -> c.Execution:
        if idempotency_key in self.record:
            return c.Execution(c.ExecutionState.APPLIED, self.record[idempotency_key])
        return c.NOT_APPLIED


async def test_get_execution_answers_running_applied_and_not_applied_by_key():
    agent = RecordKeepingAgent()
    agent.gate.clear()
    agent.record["k-before-restart"] = "halted before the restart"
    async with serving([agent_service(agent, executes=[c.ActionType.ADJUST_EXPOSURE])]) as running:
        client = AgentClient(running.channel, name="recorder")
        running_call = asyncio.ensure_future(client.execute(_action("k-1"), plan_sequence=3))
        await agent.entered.wait()
        assert (await client.execution("k-1")).state is c.ExecutionState.RUNNING
        agent.gate.set()
        await running_call
        applied = await client.execution("k-1")
        recorded = await client.execution("k-before-restart")
        never = await client.execution("k-never")
    assert applied == c.Execution(
        c.ExecutionState.APPLIED, "did ADJUST_EXPOSURE for plan 3", {"plan": "3"}
    )
    assert recorded == c.Execution(c.ExecutionState.APPLIED, "halted before the restart")
    assert never.state is c.ExecutionState.NOT_APPLIED


async def test_get_execution_refuses_to_guess():
    keeps_no_record = RecordingAgent([])
    async with (
        serving([agent_service(keeps_no_record, executes=[c.ActionType.HALT_TRADING])]) as owner,
        serving([agent_service(RecordingAgent([]), executes=())]) as advisor,
    ):
        with pytest.raises(MeshError) as refused:
            await AgentClient(owner.channel, name="recorder").execution("k")
        with pytest.raises(InvalidArgument) as empty:
            await AgentClient(owner.channel, name="recorder").execution("")
        nothing = await AgentClient(advisor.channel, name="recorder").execution("k")
    assert refused.value.code == "FAILED_PRECONDITION"
    assert "keeps no durable record" in refused.value.message
    assert empty.value.field == "idempotency_key"
    assert nothing.state is c.ExecutionState.NOT_APPLIED  # it executes nothing


async def test_actions_the_agent_does_not_own_or_without_key_are_rejected():
    agent = RecordingAgent([])
    async with serving([agent_service(agent, executes=[c.ActionType.ADJUST_EXPOSURE])]) as running:
        client = AgentClient(running.channel, name="recorder")
        with pytest.raises(InvalidArgument, match="does not execute HALT_TRADING") as failure:
            await client.execute(_action("k", c.HaltTrading()), plan_sequence=1)
        assert failure.value.field == "action.type"
        with pytest.raises(InvalidArgument) as failure:
            await client.execute(_action(""), plan_sequence=1)
        assert failure.value.field == "action.idempotency_key"

        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        mismatched = agent_pb2.ExecuteActionRequest(
            action=agent_pb2.Action(
                id="a",
                type=agent_pb2.ACTION_TYPE_HALT_TRADING,
                priority=agent_pb2.PRIORITY_LOW,
                parameters=agent_pb2.ActionParameters(
                    adjust_exposure=agent_pb2.AdjustExposure(sector="Tech", factor=float("nan"))
                ),
                idempotency_key="k",
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await stub.ExecuteAction(mismatched)
        assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(raw.value).metadata["field"] == "action.parameters.adjust_exposure.factor"
        unknown_priority = agent_pb2.ExecuteActionRequest(
            action=agent_pb2.Action(
                type=agent_pb2.ACTION_TYPE_ADJUST_EXPOSURE,
                priority=99,
                parameters=agent_pb2.ActionParameters(
                    adjust_exposure=agent_pb2.AdjustExposure(sector="Tech", factor=1.1)
                ),
                idempotency_key="k",
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await stub.ExecuteAction(unknown_priority)
        assert error_info(raw.value).metadata["field"] == "action.priority"
    assert agent.executed == []


async def test_an_agent_that_returns_nonsense_fails_as_internal_not_as_bad_request():
    broken = _recommendations()[:1]
    broken[0] = c.Recommendation(
        id="r0",
        priority=c.Priority.LOW,
        target="x",
        parameters=c.HaltTrading(),
        confidence=1.7,
        rationale="overconfident",
    )
    async with serving([agent_service(RecordingAgent(broken))]) as running:
        client = AgentClient(running.channel, name="recorder")
        with pytest.raises(MeshError, match="confidence") as failure:
            await client.recommend(c.AgentContext(cycle_id="c"))
        assert failure.value.code == "INTERNAL"


def test_cyclic_dependencies_are_rejected():
    def rec(rid: str, *deps: str) -> c.Recommendation:
        return c.Recommendation(
            id=rid,
            priority=c.Priority.LOW,
            target="t",
            parameters=c.HaltTrading(),
            confidence=0.5,
            rationale="r",
            depends_on=deps,
        )

    c.validate_recommendations("a", [rec("x"), rec("y", "x"), rec("z", "x", "y")])
    with pytest.raises(InvalidArgument, match=r"cycle: x -> z -> y -> x"):
        c.validate_recommendations("a", [rec("x", "z"), rec("y", "x"), rec("z", "y")])
    assert c.find_cycle({"a": ("b",), "b": ()}) == []
