"""SESA, the Self-Evolving Strategy Architect: mutate, evaluate, select strategies, repeat."""

from sesa.agent import (
    EvolutionOrder,
    EvolutionReport,
    FinishedEvolution,
    SesaAgent,
    ShadowBook,
    book_candidates,
    book_strategy_id,
)
from sesa.api import SESAEngine
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig
from sesa.evolution import (
    EvaluationType,
    Evolution,
    EvolutionConfig,
    EvolutionResult,
    GenerationStats,
)
from sesa.mutation import OPERATORS, MutationOperator
from sesa.priors import Priors, TunedParameters
from sesa.scenarios import BlockBootstrap, ScenarioGenerator
from sesa.selection import Judgement, Ranking, SelectionConfig, judge, rank, select

__all__ = [
    "OPERATORS",
    "BlockBootstrap",
    "EvaluationType",
    "Evolution",
    "EvolutionConfig",
    "EvolutionOrder",
    "EvolutionReport",
    "EvolutionResult",
    "FinishedEvolution",
    "GenerationStats",
    "Judgement",
    "MutationOperator",
    "Priors",
    "Ranking",
    "SESAEngine",
    "ScenarioGenerator",
    "SelectionConfig",
    "SesaAgent",
    "SesaClient",
    "SesaConfig",
    "ShadowBook",
    "TunedParameters",
    "bar_source",
    "book_candidates",
    "book_strategy_id",
    "judge",
    "rank",
    "select",
]
