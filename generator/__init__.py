"""Explaining vision transformers, reproducibly, as a browsable gallery."""

from ._version import __version__
from .builder import BuildResult, build, export_figures  # no torch: cheap to import
from .config.loading import load_config
from . import sections as _sections  # noqa: F401,E402  (registers the built-in sections and methods in the config schema)

__all__ = ["BuildResult", "__version__", "build", "export_figures", "load_config"]
