"""Populations backtested on the workers of a local Dask cluster: bit-for-bit the in-process
results (evaluations, scenario evaluations, whole evolutions), the bars held once per worker,
cancellation reaching the cluster, and clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backtest.cluster import DaskCluster
from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.concurrency import Cancelled, CancelToken
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.base.genome import Policy, StrategyFamily
from sesa.evolution import Evolution, EvolutionConfig
from sesa.mutation import OPERATORS
from sesa.selection import SelectionConfig
from tests.helpers.cluster import exactly, local_cluster

POLICY = Policy()


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(workers=2, task_size=8) as running:
        yield running


@pytest.fixture(scope="module")
def market():
    return generate(SyntheticMarketSpec(seed=11, days=4))


def population(size: int, seed: int = 0) -> list:
    """``size`` distinct tweaks of each family's default genome."""
    rng = np.random.default_rng(seed)
    parents = [POLICY.default_genome(f) for f in StrategyFamily]
    tweak = OPERATORS["parameter_tweak"]
    found: dict[str, object] = {}
    while len(found) < size:
        parent = parents[len(found) % len(parents)]
        child = tweak.mutate(
            [parent], policy=POLICY, rng=rng, magnitude=0.5, rate=0.8, generation=1
        )
        found[child.id] = child
    return list(found.values())


def evolve(evaluator: Evaluator, data: BarData):
    config = EvolutionConfig(num_generations=2, elite_carry_forward=3, num_mutations_per_parent=12)
    evolution = Evolution(
        evaluator=evaluator,
        selection=SelectionConfig(),
        config=config,
        rng=np.random.default_rng(4),
    )
    evolution.start([], data)
    while not evolution.finished:
        evolution.step()
    return evolution


def test_an_evolution_over_two_workers_is_the_in_process_one_bit_for_bit(cluster, market):
    data = BarData(market.series[0])
    here = evolve(Evaluator(), data)
    there = evolve(Evaluator(cluster=cluster), BarData(market.series[0]))
    assert len(here.evaluations) > 3 * cluster.task_size  # several tasks per generation
    assert exactly(there.evaluations) == exactly(here.evaluations)
    a, b = here.result(), there.result()
    assert [(j.genome_id, j.stage) for j in b.top] == [(j.genome_id, j.stage) for j in a.top]
    assert exactly([j.evaluation for j in b.top]) == exactly([j.evaluation for j in a.top])
    assert (b.trials, b.pbo) == (a.trials, a.pbo)


def test_scenario_evaluations_match_and_the_bars_are_shipped_once_per_worker(cluster, market):
    paths = [BarData(s) for s in market.series[:2]]
    genomes = population(40)
    here = Evaluator().evaluate_scenarios(genomes, paths)
    there = Evaluator(cluster=cluster).evaluate_scenarios(genomes, paths)
    assert exactly(there) == exactly(here)
    # Every path's bars sit on both workers, each with its indicator table built there once.
    held = cluster.client.run(
        lambda dask_worker: sorted(
            type(v).__name__ for v in dask_worker.data.values() if hasattr(v, "series")
        )
    )
    assert len(held) == 2
    for names in held.values():
        assert names.count("_Bars") >= len(paths)


def test_a_cancelled_evaluation_cancels_the_clusters_work(cluster, market):
    data = BarData(market.series[1])

    class CancelledOnceSubmitted(CancelToken):
        """Cancelled at the first look after the tasks went out."""

        @property
        def cancelled(self) -> bool:
            return True

    with pytest.raises(Cancelled):
        Evaluator(cluster=cluster).evaluate(
            population(200, seed=3), data, token=CancelledOnceSubmitted()
        )

    def unfinished(dask_scheduler) -> list[str]:
        return [
            str(key)
            for key, task in dask_scheduler.tasks.items()
            if str(key).startswith("_simulate_task") and task.state != "memory"
        ]

    # The client's messages reach the scheduler in order: once a task submitted after the
    # cancellation has run, the cancellation has been handled.
    assert cluster.client.submit(sum, [1, 2], pure=False).result() == 3
    assert cluster.client.run_on_scheduler(unfinished) == []
    # The cluster still serves the next evaluation.
    genomes = population(10, seed=5)
    assert exactly(Evaluator(cluster=cluster).evaluate(genomes, data)) == exactly(
        Evaluator().evaluate(genomes, data)
    )


def test_no_scheduler_is_unavailable_and_bad_settings_name_themselves():
    with pytest.raises(Unavailable, match=r"no Dask scheduler at tcp://127\.0\.0\.1:9"):
        DaskCluster(address="tcp://127.0.0.1:9", connect_timeout_seconds=0.5)
    with pytest.raises(InvalidArgument, match="address"):
        DaskCluster()
    with pytest.raises(InvalidArgument, match="task_size"):
        DaskCluster(address="tcp://127.0.0.1:9", task_size=0)


def test_a_tasks_own_error_is_raised_as_itself(cluster, market):
    data = BarData(market.series[2])
    broken = dataclasses.replace(population(1, seed=9)[0], parameters={})
    with pytest.raises(KeyError):
        cluster.simulate(Evaluator(), [broken], data, summaries=True)
