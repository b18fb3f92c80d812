"""The registry of gallery sections, in page order."""

from __future__ import annotations

from ..config.schema import Table, register_table
from .base import ModelInput, Section
from .explorer import ExplorerSection
from .faithfulness import FaithfulnessSection
from .heads import HeadsSection
from .lime import LimeSection
from .maps import MapsSection
from .perturb import PerturbSection
from .probe import ProbeSection
from .rollout import RolloutSection
from .stats import StatsSection
from .swin import SwinSection
from .tokens import TokensSection
# the built-in relevance methods register in the order the maps grid shows them
from ..relevance import lime_map as _lime_map  # noqa: F401,E402
from ..relevance import attention_maps as _attention_maps  # noqa: F401,E402
from ..relevance import library as _library_methods  # noqa: F401,E402

SECTIONS: tuple[type[Section], ...] = (HeadsSection, RolloutSection, SwinSection, StatsSection, TokensSection, LimeSection,
                                         MapsSection, PerturbSection, ProbeSection, FaithfulnessSection, ExplorerSection)

for _section in SECTIONS:
    register_table("sections", Table(_section.name, _section.Settings, _section.check_config))

__all__ = ["SECTIONS", "ModelInput", "Section"]
