"""The AI Risk Officer: VaR/CVaR, exposure and drawdown limits, and the kill switch."""

from agents.risk.assessment import RiskReport
from agents.risk.client import RiskClient
from agents.risk.config import RiskConfig
from agents.risk.engine import RiskOfficer
from agents.risk.limits import Halt, RiskPolicy

__all__ = [
    "Halt",
    "RiskClient",
    "RiskConfig",
    "RiskOfficer",
    "RiskPolicy",
    "RiskReport",
]
