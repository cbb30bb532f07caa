"""The base of scenario generators: forward price paths a population is evaluated on."""

from __future__ import annotations

import abc

import numpy as np

from qtmesh.base.bars import BarSeries


class ScenarioGenerator(abc.ABC):
    """Produces ``count`` OHLCV paths of ``length`` bars that continue ``history``.

    Implementations: the block bootstrap here. The world-model service's regime-conditioned
    paths come over the network instead (:mod:`sesa.forward`), as cumulative log returns that
    :func:`sesa.scenarios.series_from_log_returns` turns into bars.
    """

    @abc.abstractmethod
    def generate(
        self, history: BarSeries, *, count: int, length: int, rng: np.random.Generator
    ) -> list[BarSeries]: ...
