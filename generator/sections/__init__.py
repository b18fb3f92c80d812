"""The registry of gallery sections, in page order."""

from __future__ import annotations

from .base import ModelInput, Section
from .faithfulness import FaithfulnessSection
from .heads import HeadsSection
from .lime import LimeSection
from .maps import MapsSection
from .perturb import PerturbSection
from .probe import ProbeSection
from .rollout import RolloutSection
from .stats import StatsSection
from .swin import SwinSection

SECTIONS: tuple[type[Section], ...] = (HeadsSection, RolloutSection, SwinSection, StatsSection, LimeSection, MapsSection,
                                         PerturbSection, ProbeSection, FaithfulnessSection)

__all__ = ["SECTIONS", "ModelInput", "Section"]
