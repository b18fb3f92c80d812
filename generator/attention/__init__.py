"""Attention: exact capture (global and windowed), rollout, statistics, the explorer's data."""
