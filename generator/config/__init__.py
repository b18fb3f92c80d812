"""Configuration: one TOML file → frozen, validated pydantic models.

:mod:`.settings` declares the types (the top-level tables, the base of every section's and
method's table), :mod:`.schema` the registry of ``[sections.*]`` and ``[methods.*]`` tables,
:mod:`.loading` reads a file, assembles the schema from the registry and checks it all.
"""

from .loading import load_config, methods_model, parse_config, sections_model
from .settings import ConfigError, GalleryConfig, ModelConfig, RunConfig, SectionSettings, Settings, method_field

__all__ = ["ConfigError", "GalleryConfig", "ModelConfig", "RunConfig", "SectionSettings", "Settings", "load_config",
           "method_field", "methods_model", "parse_config", "sections_model"]
