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

Against a running mesh, ``SESAEngine(address="host:port")`` (or :meth:`SESAEngine.from_mesh`,
the ``sesa`` entry of ``.qtmesh/mesh.json`` that ``qtmesh up`` writes) runs each evolution on the
SESA service: one ``Evolve`` call through :class:`sesa.client.SesaClient`, whose result comes
back as the same :class:`sesa.evolution.EvolutionResult` (:func:`sesa._convert.result_from_proto`;
the evaluations' per-fold Sharpe ratios are not in the message and come back empty). The bars
are then the market's, which the service reads itself: the window of ``symbol`` ending at the
replay clock, ``evaluation_lookback_days`` long (sent in Evolve's config, as every field of
:class:`EvolutionConfig` is), or ``bars`` sent inline when given. ``seed`` is the request's seed.
Of ``evaluation_engine`` the costs and score weights are sent and of ``selection_engine`` the
top-K, each only when given; the other gates are the service's. A channel is opened per call, on
the caller's event loop (see :mod:`meta.api`).

:meth:`SESAEngine.evaluations` gives the last run's selected strategies as the meta layer's
:class:`meta.model.Evaluation` records, the ``recent_evaluations`` of
``MetaLearningOS.run_meta_update``, made at the last bar's market time (remotely, on the
market's bars, the result does not say it: the time the result arrived).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from market.synthetic import SyntheticMarketSpec, generate
from meta.model import Evaluation as MetaEvaluation
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import StrategyGenome
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import STATE_FILE, address_in_state
from sesa._convert import evolution_config_to_proto, result_from_proto
from sesa.client import SesaClient, bar_source
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
    """Runs evolutions in process on the embedded market, or on a mesh's SESA service at
    ``address`` (module docstring)."""

    def __init__(
        self,
        *,
        mutation_operators: Operators | None = None,
        evaluation_engine: Evaluator | None = None,
        selection_engine: SelectionConfig | None = None,
        bars: BarData | None = None,
        symbol: str = "ORBT",
        seed: int = 7,
        address: str | None = None,
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
        self.address = address
        self._bars = bars
        # Remotely, which of the evaluator and selection the caller chose (and so are sent).
        self._sent = (evaluation_engine is not None, selection_engine is not None)
        self.last_result: EvolutionResult | None = None
        self._last_time = 0
        # The sector of the last run's bars ("" until one ran in process).
        self.last_sector = ""

    @classmethod
    def from_mesh(
        cls,
        *,
        evaluation_engine: Evaluator | None = None,
        selection_engine: SelectionConfig | None = None,
        symbol: str = "ORBT",
        seed: int = 7,
        mesh_file: Path = STATE_FILE,
    ) -> SESAEngine:
        """The SESA service of the mesh ``qtmesh up`` started (``mesh_file``)."""
        return cls(
            evaluation_engine=evaluation_engine,
            selection_engine=selection_engine,
            symbol=symbol,
            seed=seed,
            address=address_in_state("sesa", mesh_file),
        )

    def bars(self, lookback_days: int) -> BarData:
        """The bars an in-process evolution runs on."""
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
        if self.address is not None:
            return await self._evolve(list(initial_strategies), chosen)
        return await asyncio.to_thread(self._run, list(initial_strategies), chosen)

    async def _evolve(
        self, seeds: list[StrategyGenome], config: EvolutionConfig
    ) -> EvolutionResult:
        """One Evolve call on the service at :attr:`address`; its result, converted."""
        assert self.address is not None
        message = evolution_config_to_proto(
            config, self.evaluation_engine.settings, self.selection_engine.top_k
        )
        send_evaluator, send_selection = self._sent
        if not send_evaluator:
            message.ClearField("costs")
            message.ClearField("weights")
        if not send_selection:
            message.ClearField("top_k")
        source = bar_source(
            symbol=self.symbol, bars=None if self._bars is None else self._bars.series
        )
        final: pb.GenerationStats | pb.EvolutionResult | None = None
        async with open_channel(self.address) as channel:
            async for event in SesaClient(channel).evolve(
                bars=source, seeds=seeds, config=message, seed=self.seed
            ):
                final = event
        if not isinstance(final, pb.EvolutionResult):
            raise FailedPrecondition(f"the SESA service at {self.address} sent no result")
        result = result_from_proto(final)
        self.last_result = result
        self._last_time = time.time_ns() if self._bars is None else int(self._bars.series.time[-1])
        return result

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
        self.last_sector = data.sector
        return result

    @property
    def last_time(self) -> int:
        """The market time of the last run's last bar (remotely, when its result arrived)."""
        return self._last_time

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
