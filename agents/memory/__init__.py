"""The memory engine: episodic memory with similarity recall, and semantic summaries."""
