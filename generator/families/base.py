"""The model-family adapter: the one place that knows what a family of models looks like inside.

A family (timm's VisionTransformer, its SwinTransformer, later EVA, BEiT, SwinV2 or a Hugging
Face model) is one subclass of :class:`ModelFamily` in its own module, registered with
:func:`register_family`. Everything family-specific is asked of it: whether it applies to a
module, the token layout and grid, the exact attention capture, the CAM target layer and its
reshape, LRP support, the blocks and head the randomisation check re-initialises, the window
geometry. The rest of the code asks the adapter what a model has (its :attr:`~ModelFamily.capabilities`)
and never tests a model's class or compares a family's name.

This module imports neither torch nor timm (a build whose results are all cached stays
light); family modules import them inside their methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ..models.identity import WeightsError

if TYPE_CHECKING:
    import torch

    from ..attention.capture import TokenLayout

__all__ = ["CAPABILITIES", "ModelFamily", "UnsupportedModelError", "family_named", "family_of", "missing_needs",
           "register_family", "registered_families", "unregister_family"]

#: The needs a section or relevance method can declare, and a family can provide.
CAPABILITIES: dict[str, str] = {
    "attention-rows": "token × token attention over the whole image in every block",
    "class-token": "a class token whose attention row summarises the image",
    "classifier-head": "a classifier head on pooled tokens",
    "windows": "shifted-window attention (windows, stages, patch merging)",
    "lrp": "modules that conservative LRP can propagate through",
}


class UnsupportedModelError(WeightsError):
    """A model that no registered family adapter explains (a :class:`WeightsError`: the model cannot be used)."""


class ModelFamily(ABC):
    """One family of models: subclasses set :attr:`name` and :attr:`capabilities` and answer for their models.

    Methods take the model's ``torch.nn.Module``; none of them changes it.
    """

    #: The family's name as results, the run report and cache keys record it (e.g. ``"vit"``).
    name: ClassVar[str]
    #: What models of this family can have, from :data:`CAPABILITIES`; one model may have less
    #: (:meth:`model_capabilities`).
    capabilities: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def matches(self, module: torch.nn.Module) -> bool:
        """Whether this adapter explains ``module``."""

    def model_capabilities(self, module: torch.nn.Module) -> frozenset[str]:
        """What ``module`` has, read off the module: :attr:`capabilities` less what this model lacks
        (default: a headless model, ``num_classes == 0``, has no ``"classifier-head"``)."""
        if int(getattr(module, "num_classes", 1) or 0) == 0:
            return self.capabilities - {"classifier-head"}
        return self.capabilities

    @abstractmethod
    def token_layout(self, module: torch.nn.Module) -> TokenLayout:
        """Prefix tokens (class, distillation, registers) and the (h, w) grid that grid-level maps live on."""

    def attention_capture(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        """A context manager under which a forward pass captures every block's exact post-softmax
        attention; hooks are removed on exit, also on error.

        What it yields depends on the capability: ``"attention-rows"``: a dict whose ``"attn"`` is
        (blocks, batch, heads, tokens, tokens); ``"windows"``: (attention, geometry) dicts keyed by
        (stage, block).
        """
        raise NotImplementedError(f"the {self.name} family has no attention capture")

    def patch_size(self, module: torch.nn.Module) -> tuple[int, int]:
        """(ph, pw) pixels of one patch of the model's patch embedding (default: ``module.patch_embed``)."""
        size = module.patch_embed.patch_size
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def attention(self, module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Families with ``"attention-rows"``: run ``module`` once on ``x`` (B, 3, H, W); return its logits
        and every block's (blocks, B, heads, tokens, tokens) attention, captured by :meth:`attention_capture`.

        Raises:
            generator.attention.capture.AttentionCaptureError: a block captured nothing.
        """
        from ..attention.capture import vit_attention

        return vit_attention(module, x, capture=self.attention_capture)

    def block_output_capture(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        """Families with ``"attention-rows"``: a context manager under which a forward pass stores the
        output tokens of every global-attention block, in the order of :meth:`attention`'s blocks, in its
        yielded dict's ``"tokens"`` list ((batch, tokens, channels) each); hooks are removed on exit, also
        on error.

        Default: timm's convention (as :meth:`attention`'s default), every block of ``module.blocks``; a
        family whose blocks live elsewhere hands its own list to
        :func:`generator.attention.token_norms.capture_block_outputs`.
        """
        from ..attention.token_norms import capture_block_outputs

        blocks = getattr(module, "blocks", None)
        return capture_block_outputs(list(blocks) if blocks is not None else [])

    def attention_and_outputs(self, module: torch.nn.Module,
                              x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Families with ``"attention-rows"``: one forward pass of :meth:`attention` on ``x`` (B, 3, H, W)
        under :meth:`block_output_capture`.

        Returns:
            logits: (B, classes), or (B, features) for a headless model.
            attn: (blocks, B, heads, tokens, tokens) every block's attention.
            tokens: (blocks, B, tokens, channels) every block's output.

        Raises:
            generator.attention.capture.AttentionCaptureError: a block captured nothing.
        """
        import torch

        from ..attention.capture import AttentionCaptureError

        with self.block_output_capture(module) as state:
            logits, attn = self.attention(module, x)
        missing = [i for i, t in enumerate(state["tokens"]) if t is None]
        if missing:
            raise AttentionCaptureError(f"no output tokens captured for blocks {missing}")
        return logits, attn, torch.stack(state["tokens"])

    def attention_gradients(self, module: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Families with ``"attention-rows"``: logits (B, classes), the attention (blocks, B, heads, T, T) the
        forward pass used and the gradient of the ``target`` logit (default: the predicted class) with respect
        to it (default: timm's ViT blocks, :func:`generator.attention.capture.vit_attention_gradients`)."""
        from ..attention.capture import vit_attention_gradients

        return vit_attention_gradients(module, x, target)

    def window_attention(self, module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
        """Families with ``"windows"``: run ``module`` once on ``x`` (B, 3, H, W); return its logits, every
        block's (B, windows, heads, w², w²) attention and geometry by (stage, block), captured by
        :meth:`attention_capture` (:func:`generator.attention.windows.window_attention`)."""
        from ..attention.windows import window_attention

        return window_attention(module, x, capture=self.attention_capture, blocks=len(self.window_geometry(module)))

    @abstractmethod
    def cam_target_layer(self, module: torch.nn.Module) -> torch.nn.Module:
        """The layer whose activations and gradients the CAMs read."""

    @abstractmethod
    def cam_reshape(self, module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """The function turning the CAM target layer's output into a (B, C, h, w) feature map."""

    @property
    def lrp_supported(self) -> bool:
        """Whether conservative LRP (:mod:`generator.relevance.lrp`) handles this family's modules."""
        return "lrp" in self.capabilities

    @abstractmethod
    def randomise_targets(self, module: torch.nn.Module, blocks: int) -> list[torch.nn.Module]:
        """What the randomisation check re-initialises: the classifier head and the last ``blocks`` blocks."""

    def window_geometry(self, module: torch.nn.Module) -> dict | None:
        """Window size and shift per (stage, block); None for a family without windows."""
        return None

    def window_position_bias(self, module: torch.nn.Module) -> dict:
        """Families with ``"windows"``: (stage, block) → the (heads, w², w²) position bias each block adds
        to its attention logits, as its own module computes it."""
        raise NotImplementedError(f"the {self.name} family has no windows")

    @abstractmethod
    def structure(self, module: torch.nn.Module) -> str:
        """Blocks, heads and grid in words, for the pages."""

    def missing(self, needs: frozenset[str] | set[str]) -> list[str]:
        """The needs (sorted) that models of this family lack."""
        return sorted(set(needs) - self.capabilities)


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    """Class decorator: add a family adapter to the registry (its name must be new).

    Adapters are asked in registration order; the first that matches a module explains it.
    """
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    unknown = set(cls.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"{cls.__name__} declares unknown capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}")
    if cls.name in _FAMILIES and type(_FAMILIES[cls.name]) is not cls:
        raise ValueError(f"a model family named {cls.name!r} is already registered ({type(_FAMILIES[cls.name]).__name__})")
    _FAMILIES[cls.name] = cls()
    return cls


def unregister_family(name: str) -> None:
    """Remove a family from the registry (for tests and plugins that come and go)."""
    _FAMILIES.pop(name, None)


def registered_families() -> list[ModelFamily]:
    """Every registered family adapter, in registration order."""
    return list(_FAMILIES.values())


def family_of(module: Any) -> ModelFamily:
    """The adapter that explains ``module``.

    Raises:
        UnsupportedModelError: no registered family matches; names the model class and the families.
    """
    for family in _FAMILIES.values():
        if family.matches(module):
            return family
    raise UnsupportedModelError(
        f"{type(module).__name__} is a model no registered family explains (families: "
        f"{', '.join(_FAMILIES) or 'none'}); add an adapter in generator/families/ and register it")


def family_named(name: str) -> ModelFamily:
    """The adapter registered as ``name`` (as results and model identities record it).

    Raises:
        UnsupportedModelError: no family of that name is registered.
    """
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnsupportedModelError(f"no model family named {name!r} is registered (families: "
                                    f"{', '.join(_FAMILIES) or 'none'})") from None


def missing_needs(needs: frozenset[str] | set[str], family: str) -> list[str]:
    """The needs (sorted) that models of the family named ``family`` lack."""
    return family_named(family).missing(needs)
