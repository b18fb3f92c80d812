"""The registry of gallery sections, in page order."""

from __future__ import annotations

from .base import ModelInput, Section
from .heads import HeadsSection
from .lime import LimeSection
from .rollout import RolloutSection
from .swin import SwinSection

SECTIONS: tuple[type[Section], ...] = (HeadsSection, RolloutSection, SwinSection, LimeSection)

__all__ = ["SECTIONS", "ModelInput", "Section"]
