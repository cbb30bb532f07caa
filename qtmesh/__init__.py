"""Shared runtime of Quantum Trader Mesh: config, servers, telemetry, security, errors, CLI."""
