"""The six operators that each perturb one parameter group of a parent."""

from __future__ import annotations

from qtmesh.base import genome
from qtmesh.base.genome import StrategyFamily
from sesa.mutation._base import GroupMutation


class TimeWindowMutation(GroupMutation):
    """Shifts or resizes the time-of-day window in which the strategy may enter."""

    name = "time_window"
    group = genome.TIME_WINDOW


class VolatilityFilterMutation(GroupMutation):
    """Moves the band of annualised volatility in which the strategy may enter."""

    name = "volatility_filter"
    group = genome.VOLATILITY


class RiskRewardMutation(GroupMutation):
    """Changes the take-profit distance as a multiple of the stop distance."""

    name = "risk_reward"
    group = genome.RISK_REWARD


class RLParametersMutation(GroupMutation):
    """Changes the Q-learning trader's learning rate, exploration rate and discount."""

    name = "rl_parameters"
    group = genome.RL

    def applies_to(self, family: StrategyFamily) -> bool:
        return family is StrategyFamily.Q_LEARNING


class DynamicTPSLMutation(GroupMutation):
    """Changes the ATR stop multiple and the ATR period (the stop turns on above 0)."""

    name = "dynamic_tp_sl"
    group = genome.TP_SL


class EntryExitThresholdsMutation(GroupMutation):
    """Moves the levels at which the family's signal opens and closes positions (and flips a
    crossover's entry between the spread's state and its cross event, ``entry_on_cross``)."""

    name = "entry_exit_thresholds"
    group = genome.THRESHOLDS
