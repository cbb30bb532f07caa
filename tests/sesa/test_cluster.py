"""SESA with ``cluster_address`` set backtests on a local Dask cluster's workers: Evolve, Evaluate
and RUN_EVOLUTION answer exactly as SESA evaluating in process does, over real servers."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

import sesa.service
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.config import MetaConfig
from meta.service import APP as META
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.config import ConfigError
from qtmesh.base.contract import Action, Priority, RunEvolution
from qtmesh.base.genome import Policy, StrategyFamily
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig
from tests.helpers.cluster import local_cluster

QUICK = pb.EvolutionConfig(
    num_generations=2, num_mutations_per_parent=6, evaluation_lookback_days=3
)
ALONE = {"record_to_memory": False, "recall_from_memory": False, "world_model_scenarios": False}


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(workers=2, task_size=4) as running:
        yield running


@contextlib.asynccontextmanager
async def sesa_pair(tmp_path: Path, scheduler: str):
    """Two SESAs, in process and on the cluster, each on a market of its own (the same
    synthetic data; a book each, so a key one ran is new to the other) and one meta."""

    def market(name: str) -> MarketConfig:
        return MarketConfig(synthetic_days=8, seed=5, data_dir=tmp_path / name)

    async with (
        serving_app(MARKET, market("market-a")) as market_a,
        serving_app(MARKET, market("market-b")) as market_b,
    ):
        meta_config = MetaConfig(
            data_dir=tmp_path / "meta",
            learn_from_sesa=False,
            follow_regimes=False,
            record_to_memory=False,
        )
        market_only = ChannelConfig(addresses={"market": market_a.address})
        async with serving_app(META, meta_config, channel_config=market_only) as meta:

            def channels(market) -> ChannelConfig:
                return ChannelConfig(addresses={"market": market.address, "meta": meta.address})

            here = SesaConfig(data_dir=tmp_path / "here", **ALONE)
            there = SesaConfig(data_dir=tmp_path / "there", cluster_address=scheduler, **ALONE)
            async with (
                serving_app(sesa.service.APP, here, channel_config=channels(market_a)) as a,
                serving_app(sesa.service.APP, there, channel_config=channels(market_b)) as b,
            ):
                yield a, b


def timeless(result: pb.EvolutionResult) -> bytes:
    result.elapsed_seconds = 0
    result.evolution_id = ""
    for g in result.generations:
        g.elapsed_seconds = 0
    return result.SerializeToString(deterministic=True)


async def test_evolve_and_evaluate_on_the_cluster_answer_as_in_process(tmp_path, cluster):
    async with sesa_pair(tmp_path, cluster.address) as (here, there):
        results = []
        for served in (here, there):
            events = [
                e
                async for e in SesaClient(served.channel).evolve(
                    bars=bar_source(symbol="NOVA"), config=QUICK, seed=7
                )
            ]
            results.append(events[-1])
        assert results[0].trials > 2 * cluster.task_size
        assert timeless(results[1]) == timeless(results[0])

        genomes = [Policy().default_genome(f) for f in StrategyFamily]
        evaluated = [
            await SesaClient(s.channel).evaluate(
                genomes, bars=bar_source(symbol="ORBT", lookback=2000), trials=20
            )
            for s in (here, there)
        ]
        assert evaluated[1] == evaluated[0]


async def test_a_run_evolution_action_evolves_on_the_cluster_as_in_process(tmp_path, cluster):
    action = Action(
        id="evolve",
        priority=Priority.LOW,
        target="sesa/evolution",
        parameters=RunEvolution(symbols=("ORBT",), generations=2),
        confidence=0.6,
        rationale="test",
        idempotency_key="k1",
    )
    async with sesa_pair(tmp_path, cluster.address) as (here, there):
        first = await AgentClient(here.channel, name="sesa").execute(action, plan_sequence=1)
        second = await AgentClient(there.channel, name="sesa").execute(action, plan_sequence=1)
    assert first.applied
    assert second.applied  # each SESA ran the key once, into its own market's book
    assert second.outcome == first.outcome
    assert int(first.outcome["trials"]) > 0


async def test_a_scheduler_that_does_not_answer_is_a_config_error_naming_the_setting(tmp_path):
    config = SesaConfig(
        data_dir=tmp_path,
        cluster_address="tcp://127.0.0.1:9",
        cluster_connect_seconds=0.5,
        **ALONE,
    )
    channels = ChannelConfig(addresses={"market": "127.0.0.1:9", "meta": "127.0.0.1:9"})
    with pytest.raises(ConfigError, match="cluster_address"):
        async with serving_app(sesa.service.APP, config, channel_config=channels):
            pass
