"""The spec's ``SESAEngine``, a thin layer over :class:`sesa.evolution.Evolution`.

``SESAEngine(mutation_operators=..., evaluation_engine=..., selection_engine=...)`` takes the
project's own pieces: the mutation operators (:data:`sesa.OPERATORS`, every one of which the
evolution draws from), a :class:`backtest.evaluation.Evaluator` and a
:class:`sesa.selection.SelectionConfig` (the gates and the top-K). ``run_evolution`` is a
coroutine, as the spec awaits it: the generations run in a worker thread
(``asyncio.to_thread``), so the caller's event loop keeps serving while numpy works.

Where the bars come from: ``bars`` (a :class:`backtest.indicators.BarData`) when given, else
the embedded synthetic market (:mod:`market.synthetic`, seed ``seed``) for ``symbol``, over the
config's ``evaluation_lookback_days``. The spec's string values of ``evaluation_type``
(``"backtest"``, ``"simulation"``) are accepted and mean :class:`sesa.EvaluationType`'s members.
An evolution against a running mesh goes through :class:`sesa.client.SesaClient` (``Evolve``).

:meth:`SESAEngine.evaluations` gives the last run's selected strategies as the meta layer's
:class:`meta.model.Evaluation` records, the ``recent_evaluations`` of
``MetaLearningOS.run_meta_update``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from market.synthetic import SyntheticMarketSpec, generate
from meta.model import Evaluation as MetaEvaluation
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import StrategyGenome
from sesa.evolution import EvaluationType, Evolution, EvolutionConfig, EvolutionResult
from sesa.mutation import OPERATORS, MutationOperator
from sesa.selection import SelectionConfig

Operators = Mapping[str, MutationOperator] | Iterable[MutationOperator]


def normalized_config(config: EvolutionConfig) -> EvolutionConfig:
    """``config`` with a string ``evaluation_type`` (the spec's spelling) made the enum member."""
    kind: object = config.evaluation_type
    if isinstance(kind, str):
        try:
            member = EvaluationType[kind.upper()]
        except KeyError:
            raise InvalidArgument(
                "config.evaluation_type", f"{kind!r} is not 'backtest' or 'simulation'"
            ) from None
        return dataclasses.replace(config, evaluation_type=member)
    return config


class SESAEngine:
    """Runs evolutions in process on the embedded market (module docstring)."""

    def __init__(
        self,
        *,
        mutation_operators: Operators | None = None,
        evaluation_engine: Evaluator | None = None,
        selection_engine: SelectionConfig | None = None,
        bars: BarData | None = None,
        symbol: str = "ORBT",
        seed: int = 7,
    ) -> None:
        if mutation_operators is not None:
            given = (
                mutation_operators.values()
                if isinstance(mutation_operators, Mapping)
                else mutation_operators
            )
            names = {op.name for op in given}
            if names != set(OPERATORS):
                raise InvalidArgument(
                    "mutation_operators",
                    f"the evolution draws from every registered operator ({sorted(OPERATORS)}); "
                    f"got {sorted(names)}",
                )
        self.mutation_operators = OPERATORS
        self.evaluation_engine = evaluation_engine or Evaluator()
        self.selection_engine = selection_engine or SelectionConfig()
        self.symbol = symbol
        self.seed = seed
        self._bars = bars
        self.last_result: EvolutionResult | None = None
        self._last_time = 0

    def bars(self, lookback_days: int) -> BarData:
        if self._bars is not None:
            return self._bars
        market = generate(SyntheticMarketSpec(seed=self.seed, days=lookback_days))
        for series in market.series:
            if series.symbol == self.symbol:
                return BarData(series)
        known = ", ".join(s.symbol for s in market.series)
        raise InvalidArgument("symbol", f"unknown symbol {self.symbol!r} (known: {known})")

    async def run_evolution(
        self,
        *,
        initial_strategies: Sequence[StrategyGenome] = (),
        config: EvolutionConfig | None = None,
    ) -> EvolutionResult:
        """Evolves from ``initial_strategies`` (each family's default genome when empty)."""
        chosen = normalized_config(config or EvolutionConfig())
        return await asyncio.to_thread(self._run, list(initial_strategies), chosen)

    def _run(self, seeds: list[StrategyGenome], config: EvolutionConfig) -> EvolutionResult:
        data = self.bars(config.evaluation_lookback_days)
        evolution = Evolution(
            evaluator=self.evaluation_engine,
            selection=self.selection_engine,
            config=config,
            rng=np.random.default_rng(self.seed),
        )
        evolution.start(seeds, data)
        while not evolution.finished:
            evolution.step()
        result = evolution.result()
        self.last_result = result
        self._last_time = int(data.series.time[-1])
        return result

    def evaluations(self) -> list[MetaEvaluation]:
        """The last run's top strategies as meta evaluations, at the last bar's market time."""
        if self.last_result is None:
            raise FailedPrecondition("no evolution has run yet")
        return meta_evaluations(self.last_result, symbol=self.symbol, at=self._last_time)


def meta_evaluations(result: EvolutionResult, *, symbol: str, at: int) -> list[MetaEvaluation]:
    """``result``'s top strategies as the meta layer's evaluations, made at market time ``at``;
    each strategy id is its id in the market's book, ``<symbol>/<genome id>``."""
    return [
        MetaEvaluation(
            strategy_id=f"{symbol}/{j.evaluation.genome.id}",
            family=j.evaluation.genome.family,
            generation=j.evaluation.genome.generation,
            composite_score=j.evaluation.composite_score,
            sharpe_ratio=j.evaluation.out_of_sample.sharpe_ratio,
            deflated_sharpe_ratio=j.evaluation.out_of_sample.deflated_sharpe_ratio,
            trade_count=j.evaluation.out_of_sample.trade_count,
            stage=j.stage,
            trials=result.trials,
            evaluated_time=at,
        )
        for j in result.top
    ]
