"""The AI CEO: chooses the platform's strategic mode, with hysteresis."""
