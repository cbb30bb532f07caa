"""The base of scenario generators: forward price paths a population is evaluated on."""

from __future__ import annotations

import abc

import numpy as np

from qtmesh.base.bars import BarSeries


class ScenarioGenerator(abc.ABC):
    """Produces ``count`` OHLCV paths of ``length`` bars that continue ``history``.

    Implementations: the block bootstrap here; the world-model service provides
    regime-conditioned paths through the same interface.
    """

    @abc.abstractmethod
    def generate(
        self, history: BarSeries, *, count: int, length: int, rng: np.random.Generator
    ) -> list[BarSeries]: ...
