"""Conversions between the memory engine's domain objects and ``qtmesh.api.memory.v1``."""

from __future__ import annotations

from memory.episodes import Episode, Recalled
from memory.summaries import SemanticSummary
from qtmesh.api.memory.v1 import memory_pb2 as pb
from qtmesh.base.convert import optional_time_from_proto, timestamp


def episode_to_proto(episode: Episode) -> pb.Episode:
    return pb.Episode(
        id=episode.id,
        time=timestamp(episode.time) if episode.time else None,
        features=dict(episode.features),
        decision=episode.decision,
        outcome=episode.outcome,
        regime=episode.regime,
        sector=episode.sector,
        tags=dict(episode.tags),
    )


def episode_from_proto(message: pb.Episode) -> Episode:
    """Not validated here: the store validates every episode it is given."""
    return Episode(
        id=message.id,
        time=optional_time_from_proto(message, "time") or 0,
        features=dict(message.features),
        decision=message.decision,
        outcome=message.outcome,
        regime=message.regime,
        sector=message.sector,
        tags=dict(message.tags),
    )


def recalled_to_proto(recalled: Recalled) -> pb.RecalledEpisode:
    return pb.RecalledEpisode(
        episode=episode_to_proto(recalled.episode), similarity=recalled.similarity
    )


def recalled_from_proto(message: pb.RecalledEpisode) -> Recalled:
    return Recalled(episode_from_proto(message.episode), message.similarity)


def summary_to_proto(summary: SemanticSummary) -> pb.SemanticSummary:
    return pb.SemanticSummary(
        regime=summary.regime,
        sector=summary.sector,
        episode_count=summary.episode_count,
        mean_outcome=summary.mean_outcome,
        outcome_stddev=summary.outcome_stddev,
        hit_rate=summary.hit_rate,
        decision_outcomes=dict(summary.decision_outcomes),
    )


def summary_from_proto(message: pb.SemanticSummary) -> SemanticSummary:
    return SemanticSummary(
        regime=message.regime,
        sector=message.sector,
        episode_count=message.episode_count,
        mean_outcome=message.mean_outcome,
        outcome_stddev=message.outcome_stddev,
        hit_rate=message.hit_rate,
        decision_outcomes=dict(message.decision_outcomes),
    )
