"""The federation: asks every agent, scores consensus and publishes the Global Action Plan."""
