"""The registry of gallery sections, in page order."""

from __future__ import annotations

from .base import ModelInput, Section
from .heads import HeadsSection

SECTIONS: tuple[type[Section], ...] = (HeadsSection,)

__all__ = ["SECTIONS", "ModelInput", "Section"]
