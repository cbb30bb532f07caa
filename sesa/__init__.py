"""SESA, the Self-Evolving Strategy Architect: mutate, evaluate, select strategies, repeat."""
