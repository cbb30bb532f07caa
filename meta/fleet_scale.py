"""Meta's scale reaches the fleet: every parameter version whose risk multiplier or position-size
scale differs from the last one applied is given to the market's fleet, which multiplies every
position by their product from the next bar and names the version in its change.

The publisher reads the engine's current version whenever it changes and pushes it; the market
applies each version once, so a push repeated after a reconnect or a restart changes nothing.
Pushes keep going while the market is away: :func:`~qtmesh.base.reconnect.follow_forever`
retries with backoff, and the version current when the market answers again is the one pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog

from meta.engine import MetaEngine
from meta.model import MetaParameters
from qtmesh.base.reconnect import follow_forever

_log = structlog.get_logger("meta.fleet_scale")


class FleetScale(Protocol):
    """What the publisher calls (implemented by MarketClient)."""

    async def apply_meta_parameters(
        self, *, version: int, risk_multiplier: float, position_size_scale: float
    ) -> object: ...


def _scales(p: MetaParameters) -> tuple[float, float]:
    return (p.risk_multiplier, p.position_size_scale)


async def publish_scale(
    engine: MetaEngine,
    fleet: FleetScale,
    *,
    initial_backoff: float,
    max_backoff: float,
) -> None:
    """Runs until cancelled: pushes every changed scale of ``engine``'s parameters to ``fleet``."""
    # The seed's scales are the fleet's own starting point: nothing to push for them.
    pushed: list[tuple[float, float]] = [(1.0, 1.0)] if engine.parameters.version == 1 else []

    async def follow(connected: Callable[[], None]) -> None:
        while True:
            changed = engine.signal.current()
            parameters = engine.parameters
            if not pushed or _scales(parameters) != pushed[-1]:
                await fleet.apply_meta_parameters(
                    version=parameters.version,
                    risk_multiplier=parameters.risk_multiplier,
                    position_size_scale=parameters.position_size_scale,
                )
                connected()
                pushed.append(_scales(parameters))
                del pushed[:-1]
            await changed.wait()

    await follow_forever(
        follow,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        log=_log,
        what="publishing meta's scale to the fleet",
    )
