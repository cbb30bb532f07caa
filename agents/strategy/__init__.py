"""The AI Strategy Officer: which strategies to enable, disable, reweight and promote."""
