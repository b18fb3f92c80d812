"""Explaining vision transformers, reproducibly, as a browsable gallery."""

__version__ = "0.1.0"
