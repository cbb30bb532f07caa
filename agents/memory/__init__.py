"""The memory engine: episodic memory with similarity recall, and semantic summaries."""

from agents.memory.client import MemoryClient
from agents.memory.config import MemoryConfig
from agents.memory.engine import MemoryEngine
from agents.memory.episodes import Episode, Recalled
from agents.memory.index import EpisodeIndex
from agents.memory.store import EpisodeStore

__all__ = [
    "Episode",
    "EpisodeIndex",
    "EpisodeStore",
    "MemoryClient",
    "MemoryConfig",
    "MemoryEngine",
    "Recalled",
]
