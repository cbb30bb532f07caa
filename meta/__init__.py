"""The meta-learning OS and meta policy: the layer that tunes how the platform learns."""
