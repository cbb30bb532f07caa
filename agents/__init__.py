"""The agents that exist only as agents (CEO, risk, strategy), and what the three officers share.
Every service, these and the others, serves the agent contract of :mod:`qtmesh.base.contract`
through :mod:`qtmesh.runtime.agent_service`.
"""

from agents.fleet_history import FleetHistory, FleetReader, FleetSampler
from agents.officer import FleetPeriods, Market, Officer
from agents.policy_log import OwnedPolicy, PolicyLog
from agents.refresh import ClockStream, Refresher, follow_clock

__all__ = [
    "ClockStream",
    "FleetHistory",
    "FleetPeriods",
    "FleetReader",
    "FleetSampler",
    "Market",
    "Officer",
    "OwnedPolicy",
    "PolicyLog",
    "Refresher",
    "follow_clock",
]
