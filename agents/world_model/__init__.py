"""The world model: regime detection (Gaussian HMM) and forward scenarios (block bootstrap)."""
