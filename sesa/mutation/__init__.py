"""The nine mutation operators, by name; each is its own class behind MutationOperator."""

from __future__ import annotations

from collections.abc import Mapping

from sesa.mutation._base import MutationOperator
from sesa.mutation._crossover import Crossover
from sesa.mutation._groups import (
    DynamicTPSLMutation,
    EntryExitThresholdsMutation,
    RiskRewardMutation,
    RLParametersMutation,
    TimeWindowMutation,
    VolatilityFilterMutation,
)
from sesa.mutation._hybrid import HybridMutation
from sesa.mutation._tweak import ParameterTweak

_GROUPS = (
    TimeWindowMutation(),
    VolatilityFilterMutation(),
    RiskRewardMutation(),
    RLParametersMutation(),
    DynamicTPSLMutation(),
    EntryExitThresholdsMutation(),
)

OPERATORS: Mapping[str, MutationOperator] = {
    op.name: op for op in (ParameterTweak(), *_GROUPS, HybridMutation(_GROUPS), Crossover())
}

__all__ = [
    "OPERATORS",
    "Crossover",
    "DynamicTPSLMutation",
    "EntryExitThresholdsMutation",
    "HybridMutation",
    "MutationOperator",
    "ParameterTweak",
    "RLParametersMutation",
    "RiskRewardMutation",
    "TimeWindowMutation",
    "VolatilityFilterMutation",
]
