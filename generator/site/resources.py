"""Where the package's data lives: the page templates and the site theme, installed or in a checkout."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["templates_dir", "theme_config"]

_CHECKOUT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def templates_dir() -> Path:
    """The folder of the Jinja2 templates: the installed ``generator.templates`` package, else the checkout's."""
    try:
        folder = Path(str(importlib.resources.files("generator.templates")))
    except ModuleNotFoundError:  # running from a checkout that is not installed
        folder = _CHECKOUT_TEMPLATES
    if not (folder / "image.md.j2").is_file():
        raise FileNotFoundError(f"the gallery's templates are missing (looked in {folder}); reinstall vit-gallery")
    return folder


def theme_config() -> Path:
    """The mkdocs theme configuration that every generated site inherits."""
    return templates_dir() / "mkdocs-theme.yml"
