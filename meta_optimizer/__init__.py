"""The meta optimizer ("Sovereign Singularity"): audits encrypted alpha reports by sector,
proposes fleet changes into an append-only, hash-chained ledger, and records what became of each
proposal (applied, rejected or expired) from the federation's plans.
"""

from meta_optimizer.agent import MetaOptimizerAgent
from meta_optimizer.api import MetaOptimizerService, get_meta_optimizer_service
from meta_optimizer.audit import Audit, AuditSettings, ProposalType
from meta_optimizer.client import MetaOptimizerClient, PlanFeed
from meta_optimizer.config import MetaOptimizerConfig
from meta_optimizer.engine import MetaOptimizer, Pulse
from meta_optimizer.follower import PlanFollower
from meta_optimizer.ledger import (
    ChainVerifier,
    Cycle,
    EventKind,
    LedgerEvent,
    Proposal,
    ProposalState,
    Transition,
    Verification,
)
from meta_optimizer.schedule import CycleScheduler
from meta_optimizer.store import LedgerStore

__all__ = [
    "Audit",
    "AuditSettings",
    "ChainVerifier",
    "Cycle",
    "CycleScheduler",
    "EventKind",
    "LedgerEvent",
    "LedgerStore",
    "MetaOptimizer",
    "MetaOptimizerAgent",
    "MetaOptimizerClient",
    "MetaOptimizerConfig",
    "MetaOptimizerService",
    "PlanFeed",
    "PlanFollower",
    "Proposal",
    "ProposalState",
    "ProposalType",
    "Pulse",
    "Transition",
    "Verification",
    "get_meta_optimizer_service",
]
