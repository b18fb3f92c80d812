"""Layer-wise relevance propagation for timm ViT and Swin by conservative propagation (CP-LRP).

The forward pass is left numerically as it is; only its backward pass changes, so that the model
becomes, for the backward pass, an affine function of the input whose gradient×input is LRP:

* attention: the post-softmax attention probabilities are treated as constants (the output of
  ``attn_drop``, which is the tensor multiplied with V, is detached; timm's fused SDPA path is
  switched off for the pass so the probabilities exist). Ali et al. 2022, "XAI for Transformers:
  Better Explanations through Conservative Propagation"; Achtibat et al. 2024, "AttnLRP".
* LayerNorm: ``(x − mean) / std · γ + β`` with ``std`` detached (the identity-on-normalisation
  rule: the centring stays, a linear map; the scale is a constant).
* GELU (and ReLU / SiLU): ``x · (act(x) / x)`` with the ratio detached, so the element-wise
  nonlinearity passes relevance on unchanged (the identity rule of AttnLRP).
* linear layers (``Linear``, the patch embedding's ``Conv2d``), residual additions, token
  concatenation and pooling: plain gradient. On this detached graph gradient×input *is* the LRP-0
  rule (ε → 0) for every linear layer (Ali et al. 2022, sec. 3).

Each change is a forward hook that returns ``lin + (out − lin).detach()`` with ``lin`` the detached
form, so values stay those of the unmodified forward (up to one rounding) and only gradients change.
Hooks and the fused-attention switch live in :func:`conservative_propagation` and are removed in
``finally``; nothing in torch or timm is patched.

Conservation. With those factors constant, the target logit ``f`` is a linear function of the input
``x`` and of every additive constant of the network ("sources": linear and conv biases, LayerNorm
β, position embeddings, class/register tokens). Euler's identity then gives exactly

    Σ_pixels,channels R_x  +  Σ_sources ⟨∂f/∂s, s⟩  =  f(x).

:func:`lrp_relevance` computes both terms and checks the identity on every call (relative to the
total absolute relevance: ≤ 1e-9 in float64, ≤ 1e-3 in float32), raising if it fails: that
catches any unhandled nonlinearity. The input relevance alone sums to ``f`` minus the sources'
share, which is not zero when the network has biases (it is ~0 for timm's random initialisation,
whose biases are zero, but not for trained weights); both are reported.

zennit is not used: its rules expect relevance to flow as the autograd gradient between the modules
they hook, and timm's residual additions, ``attn @ v`` and token concatenation are functional
operations that no zennit rule or canonizer (0.5.1) covers, so a zennit composite on these
models is not conservative.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from timm.layers import LayerScale
from timm.layers.attention import Attention
from timm.models.swin_transformer import WindowAttention

from ..attention.capture import unfused_attention
from .common import Family, detect_family, targets_tensor

__all__ = [
    "LRPError",
    "LRPResult",
    "additive_sources",
    "conservative_propagation",
    "lrp",
    "lrp_relevance",
]

_ACTIVATIONS = (torch.nn.GELU, torch.nn.ReLU, torch.nn.SiLU)
_LINEAR_LEAVES = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Dropout, torch.nn.Identity, torch.nn.Softmax,
                  torch.nn.Flatten, LayerScale)
_SOURCE_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "absolute_pos_embed")


class LRPError(RuntimeError):
    """The model holds something CP-LRP cannot propagate through, or relevance was not conserved."""


def _check_supported(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every leaf module must be one of the handled kinds; return the attention modules (one pass)."""
    from timm.layers import DropPath, SelectAdaptivePool2d
    from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool

    attention, softmaxes = [], []
    patch_proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    handled = _LINEAR_LEAVES + _ACTIVATIONS + (torch.nn.LayerNorm, DropPath, FastAdaptiveAvgPool, SelectAdaptivePool2d)
    for name, m in model.named_modules():
        if isinstance(m, (Attention, WindowAttention)):
            if getattr(m, "gate", None) is not None:
                raise LRPError(f"{name}: gated attention (sigmoid gate) has no CP-LRP rule here")
            attention.append(m)
            continue
        if isinstance(m, torch.nn.Softmax):
            softmaxes.append((name, m))
        if next(m.children(), None) is not None:
            continue
        if not isinstance(m, handled) or (isinstance(m, torch.nn.Conv2d) and m is not patch_proj):
            raise LRPError(f"{name} ({type(m).__name__}) has no CP-LRP rule here")
    inside = {id(getattr(a, "softmax", None)) for a in attention}
    for name, m in softmaxes:
        if id(m) not in inside:
            raise LRPError(f"{name}: a softmax outside attention has no CP-LRP rule here")
    if not attention:
        raise LRPError(f"{type(model).__name__} has no timm Attention / WindowAttention modules")
    return attention


def _layer_norm_hook(module: torch.nn.LayerNorm, args, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    dims = tuple(range(-len(module.normalized_shape), 0))
    centred = x - x.mean(dim=dims, keepdim=True)
    # two-pass variance of the centred values: the same number as ``x.var`` up to rounding, and
    # several times faster than its reduction kernel on CPU
    std = (centred.detach().square().mean(dim=dims, keepdim=True) + module.eps).sqrt()
    lin = centred / std
    if module.weight is not None:
        lin = lin * module.weight
    if module.bias is not None:
        lin = lin + module.bias
    return lin + (output - lin).detach()


def _activation_hook(_module, args, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    with torch.no_grad():
        # act(x) / x, and 0 where x is 0 (0 / 0: these activations map 0 to 0, and |act(x)| ≤ |x|,
        # so no other point gives a non-finite ratio)
        ratio = (output / x).nan_to_num_(0.0, 0.0, 0.0)
    lin = x * ratio
    return lin + (output - lin).detach()


@contextmanager
def conservative_propagation(model: torch.nn.Module) -> Iterator[dict[str, int]]:
    """Within the block, the model's backward pass is CP-LRP's (see the module docstring).

    Yields a dict counting the attention probabilities detached during forward passes in the block
    (``"attention"``) beside the number of attention modules (``"modules"``), so a caller can check
    that every attention module ran its explicit path.
    On exit, also on error, every hook is removed and ``fused_attn`` flags are restored.

    Raises:
        LRPError: a leaf module of a kind without a rule here.
    """
    attention = _check_supported(model)
    counts = {"attention": 0, "modules": len(attention)}

    def detach_probabilities(_module, _args, output):
        counts["attention"] += 1
        return output.detach()

    handles = []
    with unfused_attention(model):
        try:
            for m in model.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    handles.append(m.register_forward_hook(_layer_norm_hook))
                elif isinstance(m, _ACTIVATIONS):
                    handles.append(m.register_forward_hook(_activation_hook))
            for a in attention:
                handles.append(a.attn_drop.register_forward_hook(detach_probabilities))
            yield counts
        finally:
            for h in handles:
                h.remove()


def additive_sources(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters that enter the logit additively: Linear/Conv biases, LayerNorm β, and the model's
    position embeddings and prefix tokens. (name, parameter) pairs."""
    sources = []
    for mname, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm)) and m.bias is not None:
            sources.append((f"{mname}.bias", m.bias))
    for name in _SOURCE_NAMES:
        p = getattr(model, name, None)
        if isinstance(p, torch.nn.Parameter):
            sources.append((name, p))
    return sources


@dataclass(frozen=True)
class LRPResult:
    """CP-LRP relevance of a batch.

    Attributes:
        relevance: (B, 3, H, W) input relevance R_x = x · ∂f/∂x on the CP-LRP graph.
        logits: (B,) target logits f.
        source_relevance: (B,) relevance absorbed by the additive sources, Σ_s ⟨∂f/∂s, s⟩.
        residual: (B,) |Σ R_x + source relevance − f| / (Σ |R_x| + Σ_s |⟨∂f/∂s, s⟩| + |f|).
    """

    relevance: torch.Tensor
    logits: torch.Tensor
    source_relevance: torch.Tensor
    residual: torch.Tensor


def lrp_relevance(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, family: Family | None = None,
                  tolerance: float | None = None) -> LRPResult:
    """CP-LRP input relevance with the conservation identity checked.

    Computed in the model's and input's dtype (cast both to float64 for the tightest check). One
    backward pass per image (the per-image share of the shared bias parameters needs it).

    Args:
        model: a model whose family adapter supports LRP (timm ViT and Swin), in eval mode.
        x: (B, 3, H, W) normalised input.
        targets: B class indices.
        tolerance: largest allowed residual; default 1e-9 for float64, 1e-3 otherwise.

    Returns:
        :class:`LRPResult`, tensors detached.

    Raises:
        LRPError: unsupported modules, an attention module that did not run its explicit path, or a
            residual above ``tolerance`` (an unhandled nonlinearity or additive constant).
    """
    adapter = detect_family(model, family)
    if not adapter.lrp_supported:
        raise LRPError(f"the {adapter.name} family ({type(model).__name__}) does not support CP-LRP")
    target = targets_tensor(targets, x.shape[0], x.device)
    if tolerance is None:
        tolerance = 1e-9 if x.dtype == torch.float64 else 1e-3
    sources = tuple(p for _, p in additive_sources(model))
    frozen = [p for p in sources if not p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad(), conservative_propagation(model) as counts:
            inp = x.detach().clone().requires_grad_(True)
            logits = model(inp)
            if counts["attention"] < counts["modules"]:
                raise LRPError(f"only {counts['attention']} of {counts['modules']} attention modules ran their explicit "
                               "softmax path; their probabilities could not be held constant")
            chosen = logits.gather(1, target.view(-1, 1)).squeeze(1)
            relevance = torch.zeros_like(inp)
            absorbed = torch.zeros_like(chosen)
            scale = torch.zeros_like(chosen)
            for i in range(x.shape[0]):
                grads = torch.autograd.grad(chosen[i], (inp,) + tuple(sources), retain_graph=i < x.shape[0] - 1,
                                            allow_unused=True)
                relevance[i] = inp[i].detach() * grads[0][i]
                shares = [(g * p.detach()).sum() for g, p in zip(grads[1:], sources) if g is not None]
                absorbed[i] = torch.stack(shares).sum() if shares else 0.0
                scale[i] = relevance[i].abs().sum() + sum(s.abs() for s in shares) + chosen[i].detach().abs()
    finally:
        for p in frozen:
            p.requires_grad_(False)
    chosen = chosen.detach()
    residual = (relevance.sum(dim=(1, 2, 3)) + absorbed - chosen).abs() / scale.clamp_min(torch.finfo(scale.dtype).tiny)
    worst = float(residual.max())
    if worst > tolerance:
        raise LRPError(f"relevance not conserved: residual {worst:.3g} > {tolerance:g}; the model has an operation "
                       "or additive constant that CP-LRP does not handle here")
    return LRPResult(relevance=relevance.detach(), logits=chosen, source_relevance=absorbed.detach(),
                     residual=residual.detach())


def lrp(model: torch.nn.Module, x: torch.Tensor, targets: Sequence[int], *, family: Family | None = None,
        tolerance: float | None = None) -> np.ndarray:
    """CP-LRP map: the input relevance summed over channels (signed).

    Args: see :func:`lrp_relevance`.

    Returns:
        (B, H, W) float64 pixel map; it sums to the target logit minus the relevance absorbed by
        the network's additive constants. ``pool_to_grid(..., reduce="sum")`` gives per-patch
        relevance with the same total.
    """
    result = lrp_relevance(model, x, targets, family=family, tolerance=tolerance)
    return result.relevance.sum(dim=1).double().cpu().numpy()
