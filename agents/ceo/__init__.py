"""The AI CEO: chooses the platform's strategic mode, with hysteresis."""

from agents.ceo.client import CeoClient
from agents.ceo.config import CeoConfig
from agents.ceo.engine import Ceo, ModeReport
from agents.ceo.mode import ModeState

__all__ = [
    "Ceo",
    "CeoClient",
    "CeoConfig",
    "ModeReport",
    "ModeState",
]
