"""Explaining vision transformers, reproducibly, as a browsable gallery."""

from ._version import __version__
from .builder import BuildResult, build, export_figures  # no torch: cheap to import
from .config import load_config

__all__ = ["BuildResult", "__version__", "build", "export_figures", "load_config"]
