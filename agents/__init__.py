"""The agents (CEO, risk, strategy, memory, world model) and the contract they share."""
