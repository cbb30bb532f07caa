"""The meta-learning OS and meta policy: the layer that tunes how the platform learns."""

from meta.agent import MetaAgent
from meta.api import MetaLearningOS, MetaPolicy
from meta.client import MetaClient
from meta.config import MetaConfig, MetaLearningConfig, MetaPolicyRules, ShadowGates
from meta.engine import MetaEngine
from meta.model import (
    CallerState,
    DecisionType,
    Evaluation,
    MetaDecision,
    MetaParameters,
    MetaState,
    ShadowCandidate,
    Trade,
)
from meta.promotion import shadow_decisions

__all__ = [
    "CallerState",
    "DecisionType",
    "Evaluation",
    "MetaAgent",
    "MetaClient",
    "MetaConfig",
    "MetaDecision",
    "MetaEngine",
    "MetaLearningConfig",
    "MetaLearningOS",
    "MetaParameters",
    "MetaPolicy",
    "MetaPolicyRules",
    "MetaState",
    "ShadowCandidate",
    "ShadowGates",
    "Trade",
    "shadow_decisions",
]
