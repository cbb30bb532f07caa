"""The memory engine: episodic memory with similarity recall, and semantic summaries."""

from memory.client import MemoryClient
from memory.config import MemoryConfig
from memory.engine import MemoryEngine
from memory.episodes import Episode, Recalled
from memory.index import EpisodeIndex
from memory.recorder import Recorder
from memory.store import EpisodeStore

__all__ = [
    "Episode",
    "EpisodeIndex",
    "EpisodeStore",
    "MemoryClient",
    "MemoryConfig",
    "MemoryEngine",
    "Recalled",
    "Recorder",
]
