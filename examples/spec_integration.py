"""The spec's "Integrate with Live System" example, in process on the embedded synthetic market.

    python -m examples.spec_integration

The snippet's lines are the spec's, with its imports changed to this project's packages; the
names it uses without defining them are defined above it with the project's own objects, but
``evaluations``: the evolution's own, which one added line takes from its result. The spec
awaits at top level, so the snippet is the body of ``async def main()``, run by ``asyncio.run``.
"""

from __future__ import annotations

import asyncio

from backtest.evaluation import Evaluator
from examples._meta_section import FLEET, trades_of
from federation import FederatedEngineV2
from market.synthetic import SyntheticMarketSpec, generate
from meta import MetaLearningConfig, MetaLearningOS, MetaPolicy
from qtmesh.base.genome import Policy, StrategyFamily
from sesa import OPERATORS, EvolutionConfig, SelectionConfig, SESAEngine

mutation_ops = OPERATORS
eval_engine = Evaluator()
selection_engine = SelectionConfig()
baseline = Policy().default_genome(StrategyFamily.MA_CROSSOVER)
market = generate(SyntheticMarketSpec(seed=7, days=30))
trades = [t for strategy in FLEET for s in market.series for t in trades_of(strategy, s)]


async def main() -> dict[str, object]:
    # Initialize
    sesa = SESAEngine(
        mutation_operators=mutation_ops,
        evaluation_engine=eval_engine,
        selection_engine=selection_engine,
    )

    meta_os = MetaLearningOS(
        config=MetaLearningConfig(),
        meta_policy=MetaPolicy(),
    )

    federation = FederatedEngineV2(
        meta_learning_os=meta_os,
        sesa_engine=sesa,
    )

    # Run evolution
    result = await sesa.run_evolution(
        initial_strategies=[baseline],
        config=EvolutionConfig(num_generations=5),
    )
    evaluations = sesa.evaluations()  # not in the spec: the evolution's top, as meta reads it

    # Meta-learning update
    await meta_os.run_meta_update(
        recent_trades=trades,
        recent_evaluations=evaluations,
    )

    # Generate GAP
    gap = await federation.generate_global_action_plan()

    print(f"evolution: {len(result.top)} top strategies after {result.trials} trials")
    print(f"meta update: parameters version {meta_os.engine.parameters.version}")
    print(f"GAP #{gap.sequence}: {len(gap.actions)} actions; {gap.summary}")
    await federation.close()
    meta_os.close()
    return {"result": result, "evaluations": evaluations, "gap": gap}


if __name__ == "__main__":
    asyncio.run(main())
