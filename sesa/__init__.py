"""SESA, the Self-Evolving Strategy Architect: mutate, evaluate, select strategies, repeat."""

from sesa.agent import FinishedEvolution, SesaAgent
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
from sesa.scenarios import BlockBootstrap, ScenarioGenerator
from sesa.selection import Judgement, SelectionConfig, judge, select

__all__ = [
    "OPERATORS",
    "BlockBootstrap",
    "EvaluationType",
    "Evolution",
    "EvolutionConfig",
    "EvolutionResult",
    "FinishedEvolution",
    "GenerationStats",
    "Judgement",
    "MutationOperator",
    "ScenarioGenerator",
    "SelectionConfig",
    "SesaAgent",
    "SesaClient",
    "SesaConfig",
    "bar_source",
    "judge",
    "select",
]
