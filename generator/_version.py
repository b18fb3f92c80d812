"""The generator's version: part of every cache key, so a release recomputes what it changed."""

__version__ = "0.1.0"
