"""The federation: asks every agent, scores consensus and publishes the Global Action Plan."""

from federation.api import FederatedEngineV2
from federation.client import FederationClient
from federation.config import FederationConfig
from federation.engine import Federation
from federation.plan import AgentReport, CallOutcome, Event, Plan, StatusUpdate, build_plan
from federation.store import PlanStore

__all__ = [
    "AgentReport",
    "CallOutcome",
    "Event",
    "FederatedEngineV2",
    "Federation",
    "FederationClient",
    "FederationConfig",
    "Plan",
    "PlanStore",
    "StatusUpdate",
    "build_plan",
]
