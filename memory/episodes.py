"""Episodes (a context's features, the decision taken, its outcome), their validation, and how
episodes are compared.

Similarity (:func:`similarities`):

1. Normalisation: each feature is z-scored with the mean and the population standard deviation
   of that feature over the episodes in memory, so a feature measured in percent and one in
   basis points weigh the same. A feature that does not vary in memory is left out: it cannot
   tell episodes apart, and dividing by a zero spread is meaningless.
2. Comparison: the cosine similarity of the query's and an episode's z-scored vectors over the
   feature names they share (an episode may have recorded more, fewer or other features). It is
   in [-1, 1]; 1 means the same direction away from the average context. It is 0 when either
   vector is zero on the shared names (e.g. the context is exactly average) or when no shared
   feature varies (e.g. memory holds a single episode). An episode that shares no feature name
   with the query is not comparable and is not recalled.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from qtmesh.base.errors import InvalidArgument
from qtmesh.base.frozen import frozen_map

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,63}$")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
MAX_TEXT = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class Episode:
    """A context (features by name), the decision taken in it, and its realised outcome.

    ``time`` is in Unix nanoseconds. ``outcome`` is "higher is better", e.g. the return that
    followed the decision.
    """

    id: str
    time: int
    features: Mapping[str, float]
    decision: str
    outcome: float
    regime: str = ""
    sector: str = ""
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", frozen_map(self.features))
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))


@dataclasses.dataclass(frozen=True)
class Recalled:
    episode: Episode
    similarity: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds on what one episode may carry."""

    max_features: int = 64
    max_tags: int = 32


def validate_episode(episode: Episode, *, limits: Limits, field: str = "episode") -> None:
    """Raises InvalidArgument naming the first bad field of ``episode``."""
    if episode.id and not ID.match(episode.id):
        raise InvalidArgument(
            f"{field}.id", "must be 1-64 letters, digits or ._:- and start with a letter or digit"
        )
    if episode.time < 0:
        raise InvalidArgument(f"{field}.time", "must not be before 1970")
    validate_features(episode.features, limits=limits, field=f"{field}.features")
    _text(episode.decision, f"{field}.decision", required=True)
    if not math.isfinite(episode.outcome):
        raise InvalidArgument(f"{field}.outcome", f"{episode.outcome} is not a finite number")
    for name in ("regime", "sector"):
        value = getattr(episode, name)
        if value and not NAME.match(value):
            raise InvalidArgument(f"{field}.{name}", f"{value!r} is not a valid name")
    if len(episode.tags) > limits.max_tags:
        raise InvalidArgument(f"{field}.tags", f"at most {limits.max_tags} tags")
    for key, value in episode.tags.items():
        if not NAME.match(key):
            raise InvalidArgument(f"{field}.tags", f"{key!r} is not a valid tag name")
        _text(value, f"{field}.tags[{key}]", required=False)


def validate_features(
    features: Mapping[str, float], *, limits: Limits, field: str = "features"
) -> None:
    if not features:
        raise InvalidArgument(field, "must not be empty")
    if len(features) > limits.max_features:
        raise InvalidArgument(
            field, f"at most {limits.max_features} features (got {len(features)})"
        )
    for name, value in features.items():
        if not NAME.match(name):
            raise InvalidArgument(
                f"{field}[{name}]", "names are 1-64 letters, digits or _.:/- characters"
            )
        if not math.isfinite(value):
            raise InvalidArgument(f"{field}[{name}]", f"{value} is not a finite number")


def _text(value: str, field: str, *, required: bool) -> None:
    if required and not value.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(field, f"at most {MAX_TEXT} characters (got {len(value)})")


def similarities(query: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``query`` (F,) with each row of ``values`` (N, F) over shared names.

    Both are already z-scored; NaN marks a feature the query or an episode does not have. The
    result is NaN for an episode that shares no feature with the query.
    """
    missing = np.isnan(values)
    if not missing.any() and not np.isnan(query).any():
        # Every episode has every feature: one product and one norm per episode.
        dot = values @ query
        norms = np.sqrt(np.einsum("ij,ij->i", values, values)) * np.sqrt(query @ query)
        return _cosine(dot, norms)
    present = ~missing & ~np.isnan(query)
    v = np.where(present, values, 0.0)
    q = np.where(np.isnan(query), 0.0, query)
    norms = np.sqrt(np.einsum("ij,ij->i", v, v)) * np.sqrt(present @ (q * q))
    cosine = _cosine(v @ q, norms)
    cosine[~present.any(axis=1)] = np.nan
    return cosine


def _cosine(dot: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """dot / norms, 0 where a norm is 0, within [-1, 1] despite rounding."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.clip(cosine, -1.0, 1.0)
