"""Explaining vision transformers, reproducibly, as a browsable gallery."""

__version__ = "0.1.0"

from .builder import BuildResult, build, export_figures  # noqa: E402  (no torch: cheap to import)
from .config import load_config  # noqa: E402

__all__ = ["BuildResult", "__version__", "build", "export_figures", "load_config"]
