"""Model-family adapters, one module per family, and their registry.

Adding a family is one module with a :class:`ModelFamily` subclass decorated with
:func:`register_family`, and one import line below.
"""

from __future__ import annotations

from .base import (CAPABILITIES, ModelFamily, UnsupportedModelError, family_named, family_of, missing_needs,
                   register_family, registered_families, unregister_family)
from . import vit as _vit  # noqa: F401,E402  (registers the family)
from . import swin as _swin  # noqa: F401,E402  (registers the family)
from . import eva as _eva  # noqa: F401,E402  (registers the family)
from . import beit as _beit  # noqa: F401,E402  (registers the family)
from . import swinv2 as _swinv2  # noqa: F401,E402  (registers the family)
from . import hf_vit as _hf_vit  # noqa: F401,E402  (registers the family)
from . import hf_swin as _hf_swin  # noqa: F401,E402  (registers the family)

__all__ = ["CAPABILITIES", "ModelFamily", "UnsupportedModelError", "family_named", "family_of", "missing_needs",
           "register_family", "registered_families", "unregister_family"]
