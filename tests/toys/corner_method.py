"""A toy relevance method: the top-left cell of the model's token grid is the most relevant.

Registered by a test with ``register_method(ToyCorner)``; nothing else in the package changes.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from generator.relevance.registry import MethodSettings, RelevanceMap, RelevanceMethod


class ToyCornerSettings(MethodSettings):
    strength: float = Field(default=2.0, gt=0)


class ToyCorner(RelevanceMethod):
    name = "toy-corner"
    label = "toy corner"
    Settings = ToyCornerSettings
    description = "a test method that points at the top-left corner"
    #: The targets ``map`` was asked for, in order (the tests count computations with it).
    calls: list = []

    def map(self, model, inputs, target):
        type(self).calls.append(target)
        h, w = model.adapter.token_layout(model.module).grid
        values = np.zeros((h, w))
        values[0, 0] = self.settings.strength
        return RelevanceMap(values, {"toy": True})
