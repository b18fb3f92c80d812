"""Explanation-method wrappers (generator/relevance): a hand-built ViT whose logit reads one known
patch, equality with the libraries called directly, batch invariance, seeding, CP-LRP conservation
and an independent hand-written CP-LRP forward, and no hooks or patches left behind."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

import generator.sections  # noqa: F401  (registers the built-in relevance methods)
from generator.relevance import attribution, cam, lrp
from generator.relevance.common import baseline_tensor, pool_to_grid
from generator.relevance.registry import registered_methods

GRID = 7
REGION = (2, 5)  # the patch the synthetic model reads (row, col)
DECOY = (5, 1)  # an equally bright patch it ignores (image 1 only)


def _bright_patch(x: torch.Tensor, i: int, cell: tuple[int, int]) -> None:
    r, c = cell
    g = torch.Generator().manual_seed(7)
    x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0 + torch.rand(3, 4, 4, generator=g)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """(2, 3, 28, 28) zeros with a bright textured patch at REGION; image 1 also has the same patch at DECOY."""
    x = torch.zeros(2, 3, 28, 28)
    _bright_patch(x, 0, REGION)
    _bright_patch(x, 1, REGION)
    _bright_patch(x, 1, DECOY)
    return x


def _norm1_features(m: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    feats = {}
    handle = m.blocks[-1].norm1.register_forward_hook(lambda _m, _a, out: feats.__setitem__("a", out.detach()))
    try:
        with torch.no_grad():
            m(x)
    finally:
        handle.remove()
    return feats["a"]


def watching_vit() -> VisionTransformer:
    """A timm ViT (7×7 grid + CLS, 2 blocks, 2 heads, width 32) whose class-0 logit reads only the
    patch at REGION, whatever the other patches hold.

    Patch content lands in channels 0-7 only (non-negative filters, so a bright patch gives large
    positive content that outweighs the marker). The token at REGION carries a zero-sum position marker
    in channels 8-15 and 24-31 (one part per head); the class token lives in channels 16-23. Block 0
    mixes nothing (attention and MLP outputs zeroed). In block 1 the class token's query is a fixed
    bias along the marker, so the score of every token without the marker is exactly 0 (LayerNorm
    leaves a constant on the marker channels, which the zero-sum marker cancels) and the class token
    attends with probability > 0.999 to REGION in both heads. Values and the output projection are
    the identity, the MLP output is zeroed, the final norm is off, and the class-0 head is
    ``a_bright − a_empty``: the watched token's block-1 ``norm1`` feature with the patch bright, minus
    with it black, so the logit rises with the watched patch's content.
    """
    torch.manual_seed(0)
    m = VisionTransformer(img_size=28, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=3,
                          mlp_ratio=2.0, qkv_bias=True, global_pool="token", final_norm=False).eval()
    k = 1 + REGION[0] * GRID + REGION[1]
    eye = torch.eye(32)
    marker = torch.zeros(32)
    marker[8:12], marker[12:16], marker[24:28], marker[28:32] = 3.0, -3.0, 3.0, -3.0
    with torch.no_grad():
        m.pos_embed.zero_()
        m.pos_embed[0, k] = marker
        m.cls_token.zero_()
        m.cls_token[0, 0, 16:24] = 1.0
        m.patch_embed.proj.weight[:8] = m.patch_embed.proj.weight[:8].abs() * 3  # bright → large, positive
        m.patch_embed.proj.weight[8:] = 0
        m.patch_embed.proj.bias.zero_()
        b0, b1 = m.blocks
        for p in (b0.attn.proj.weight, b0.attn.proj.bias, b0.mlp.fc2.weight, b0.mlp.fc2.bias,
                  b1.mlp.fc2.weight, b1.mlp.fc2.bias, b1.attn.proj.bias, b1.attn.qkv.bias, b1.attn.qkv.weight):
            p.zero_()
        b1.attn.proj.weight.copy_(eye)
        b1.attn.qkv.weight[32:64] = eye  # keys: the norm1 features
        b1.attn.qkv.weight[64:] = eye  # values: the norm1 features
        bright = torch.zeros(1, 3, 28, 28)
        _bright_patch(bright, 0, REGION)
        a_bright = _norm1_features(m, bright)[0, k]
        a_empty = _norm1_features(m, torch.zeros(1, 3, 28, 28))[0, k]
        direction = marker / marker.norm()
        for h in range(2):  # score of the bright marked token 40 in each head (more when darker), 0 for the others
            s = slice(16 * h, 16 * h + 16)
            b1.attn.qkv.bias[s] = 40.0 * direction[s] / (direction[s] @ a_bright[s]) / b1.attn.scale
        m.head.weight.normal_(0, 0.01)
        m.head.weight[0] = a_bright - a_empty
        m.head.bias.zero_()
    return m


@pytest.fixture(scope="module")
def model() -> VisionTransformer:
    return watching_vit()


def region_cell_index() -> int:
    return REGION[0] * GRID + REGION[1]


def test_synthetic_model_reads_only_the_region(model, images):
    from generator.attention.capture import vit_attention

    with torch.no_grad():
        _, attn = vit_attention(model, images)
    assert attn[1, :, :, 0, 1 + region_cell_index()].min() > 0.999
    noise = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    outside = torch.ones(1, 1, 28, 28)
    outside[..., 4 * REGION[0]:4 * REGION[0] + 4, 4 * REGION[1]:4 * REGION[1] + 4] = 0
    with torch.no_grad():  # anything outside the region leaves the logit as it is; the region moves it
        torch.testing.assert_close(model(images + outside * noise)[:, 0], model(images)[:, 0], atol=1e-5, rtol=0)
        assert (model(images)[:, 0] - model(torch.zeros_like(images))[:, 0]).min() > 1.0


# ----------------------------------------------------------------------------- hooks and patches


def _hook_dicts(m: torch.nn.Module):
    return [m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks,
            m._forward_hooks_with_kwargs, m._forward_pre_hooks_with_kwargs]


def assert_clean(model: torch.nn.Module, before: dict | None = None) -> None:
    """No module hook, no global module hook, no parameter gradient, no state change."""
    from torch.nn.modules import module as nn_module

    for name, m in model.named_modules():
        assert all(len(d) == 0 for d in _hook_dicts(m)), f"hook left on {name or 'model'}"
    for g in (nn_module._global_forward_hooks, nn_module._global_forward_pre_hooks,
              nn_module._global_backward_hooks, nn_module._global_backward_pre_hooks):
        assert len(g) == 0
    assert all(p.grad is None for p in model.parameters())
    if before is not None:
        assert snapshot(model) == before


def snapshot(model: torch.nn.Module) -> dict:
    """Every module's attributes (by identity for objects), the functional API and key methods."""
    def ident(v):
        return v if isinstance(v, (bool, int, float, str, tuple, type(None))) else id(v)

    state = {name: {k: ident(v) for k, v in vars(m).items()} for name, m in model.named_modules()}
    state["<F>"] = {k: id(v) for k, v in vars(F).items()}
    state["<torch>"] = {k: id(getattr(torch, k)) for k in ("softmax", "layer_norm", "matmul")}
    state["<Tensor>"] = {k: id(getattr(torch.Tensor, k)) for k in ("softmax", "__matmul__", "detach")}
    state["<classes>"] = {c.__name__: id(c.forward) for c in (torch.nn.LayerNorm, torch.nn.GELU, torch.nn.Linear)}
    from timm.layers.attention import Attention
    from timm.models.swin_transformer import WindowAttention

    state["<timm>"] = {c.__name__: id(c.forward) for c in (Attention, WindowAttention)}
    state["<params>"] = [(id(p), p.requires_grad) for p in model.parameters()]
    return state


#: Every wrapped function, by the label of the registered method that wraps it.
ALL_METHODS = {cls.label: cls.wrapped() for cls in registered_methods() if cls.wraps}
FAST = {"Score-CAM": dict(batch_size=32), "Integrated Gradients": dict(n_steps=16),
        "SmoothGrad": dict(nt_samples=8), "KernelSHAP": dict(n_samples=120)}


def run(name, model, x, targets, **extra):
    return ALL_METHODS[name](model, x, targets, **{**FAST.get(name, {}), **extra})


# ----------------------------------------------------------------------------- the region ranks first


def to_cells(name: str, out: np.ndarray) -> np.ndarray:
    if out.shape[1:] == (GRID, GRID):
        return out
    return pool_to_grid(out, (GRID, GRID), reduce="mean")


@pytest.mark.parametrize("name", [n for n in ALL_METHODS if n != "EigenCAM"])
def test_region_ranks_first(model, images, name):
    extra = {"baseline": torch.zeros(1, 3, 1, 1)} if name in ("Integrated Gradients", "KernelSHAP", "Occlusion") else {}
    cells = to_cells(name, run(name, model, images, [0, 0], **extra)).reshape(2, -1)
    # Channel-weighted CAMs (Grad-CAM, Grad-CAM++, Score-CAM) weight whole feature channels, so a
    # decoy with the same texture scores on the channels the region scores on: on this model Grad-CAM
    # provably puts the decoy above the region (it sums a_decoy·(a_bright − a_empty) > a_bright·(…)).
    # They are held to image 0 (no decoy); every other method must also all but ignore the decoy.
    channel_weighted = name in ("Grad-CAM", "Grad-CAM++", "Score-CAM")
    for i in (0,) if channel_weighted else (0, 1):
        order = np.argsort(-cells[i], kind="stable")
        assert order[0] == region_cell_index(), f"{name}: image {i} ranks cell {order[0]} first"
        assert cells[i, region_cell_index()] > 0
    if not channel_weighted:
        decoy = DECOY[0] * GRID + DECOY[1]
        assert cells[1, region_cell_index()] > 10 * abs(cells[1, decoy]), f"{name}: the decoy is too relevant"


def test_eigencam_is_class_agnostic_and_singles_out_the_principal_direction(model, images):
    """EigenCAM ignores the target, and its map is the clipped projection of the centred norm1 tokens
    on their first right singular vector (sign as the SVD returns it), min-max scaled."""
    a = cam.eigencam(model, images, [0, 0])
    assert np.array_equal(a, cam.eigencam(model, images, [2, 1]))
    feats = {}
    handle = model.blocks[-1].norm1.register_forward_hook(lambda _m, _a, out: feats.__setitem__("a", out.detach()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    for i in range(2):
        tokens = feats["a"][i, 1:].double().numpy()
        centred = tokens - tokens.mean(axis=0)
        _, _, vt = np.linalg.svd(centred)
        proj = np.maximum(centred @ vt[0], 0).reshape(GRID, GRID)
        proj = (proj - proj.min()) / (proj.max() - proj.min() + 1e-7)
        assert np.allclose(a[i], proj, atol=1e-4) or np.allclose(a[i], np.maximum(-centred @ vt[0], 0).reshape(
            GRID, GRID) / (np.maximum(-centred @ vt[0], 0).max() + 1e-7), atol=1e-4)


# ----------------------------------------------------------------------------- batches, seeds, hooks


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_batch_equals_single_images_and_repeats(model, images, name):
    before = snapshot(model)
    rng = torch.get_rng_state()
    both = run(name, model, images, [0, 1])
    again = run(name, model, images, [0, 1])
    singles = np.concatenate([run(name, model, images[i:i + 1], [t]) for i, t in enumerate([0, 1])])
    assert both.dtype == np.float64 and both.shape in ((2, GRID, GRID), (2, 28, 28))
    assert np.array_equal(both, again)
    scale = max(np.abs(both).max(), 1e-12)
    np.testing.assert_allclose(both, singles, atol=1e-5 * scale, rtol=0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert_clean(model, before)


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_no_hooks_after_an_error(model, images, name):
    """A wrong input size fails inside the library call (timm's patch embedding asserts it)."""
    before = snapshot(model)
    with pytest.raises(Exception):
        run(name, model, torch.zeros(1, 3, 32, 32), [0])
    assert_clean(model, before)


def test_cam_index_error_is_raised_not_swallowed(model, images):
    """pytorch-grad-cam's ``__exit__`` prints and swallows IndexError; the wrapper must not."""
    before = snapshot(model)
    with pytest.raises(IndexError):
        cam.gradcam(model, images[:1], [99])
    assert_clean(model, before)


@pytest.mark.parametrize("name", ["Grad-CAM", "HiResCAM", "Grad-CAM++", "EigenCAM"])
def test_cam_backward_stops_at_the_target_layer(model, images, name):
    """No CAM reads a weight gradient or anything below its target layer, so the pass stops there:
    the blocks before it run without a graph. The map is the library's with every parameter
    trainable (test_cam_equals_library) and the flags are as they were afterwards."""
    below = []
    handle = model.blocks[0].register_forward_hook(lambda _m, _a, out: below.append(out.requires_grad))
    try:
        run(name, model, images, [0, 1])
    finally:
        handle.remove()
    assert below == [False]
    assert all(p.requires_grad for p in model.parameters())


def test_cam_on_a_frozen_model_leaves_it_frozen(images):
    frozen = watching_vit().requires_grad_(False)
    trainable = watching_vit()
    before = snapshot(frozen)
    for name in ("Grad-CAM", "HiResCAM", "Grad-CAM++"):
        np.testing.assert_array_equal(run(name, frozen, images, [0, 1]), run(name, trainable, images, [0, 1]))
    assert not any(p.requires_grad for p in frozen.parameters())
    assert_clean(frozen, before)


def test_stochastic_methods_depend_on_the_seed(model, images):
    a = attribution.smoothgrad(model, images[:1], [0], nt_samples=4, seed=0)
    b = attribution.smoothgrad(model, images[:1], [0], nt_samples=4, seed=1)
    assert not np.array_equal(a, b)
    a = attribution.kernel_shap(model, images[:1], [0], n_samples=40, seed=0)
    b = attribution.kernel_shap(model, images[:1], [0], n_samples=40, seed=1)
    assert not np.array_equal(a, b)


# ----------------------------------------------------------------------------- equal to the libraries


@pytest.fixture(scope="module")
def embedded() -> dict[str, torch.nn.Module]:
    import generator.models.embedded  # noqa: F401

    torch.manual_seed(0)
    return {"vit": timm.create_model("vit_fmnist_patch4_28").eval(),
            "swin": timm.create_model("swin_fmnist_patch2_28").eval()}


def noisy_input(seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(seed))


def reference_transform(family: str):
    """Written out for the embedded models' known layouts: 1 class token + 7×7 (ViT), 7×7×96 (Swin)."""
    if family == "vit":
        return lambda t: t[:, 1:, :].reshape(t.shape[0], 7, 7, t.shape[2]).permute(0, 3, 1, 2)
    return lambda t: t.permute(0, 3, 1, 2)


@pytest.mark.parametrize("family", ["vit", "swin"])
@pytest.mark.parametrize("name, cls_name", [("Grad-CAM", "GradCAM"), ("HiResCAM", "HiResCAM"),
                                            ("Grad-CAM++", "GradCAMPlusPlus"), ("EigenCAM", "EigenCAM"),
                                            ("Score-CAM", "ScoreCAM")])
def test_cam_equals_library(embedded, family, name, cls_name):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    m = embedded[family]
    x, targets = noisy_input(), [3, 7]
    layer = m.blocks[-1].norm1 if family == "vit" else m.layers[-1].blocks[-1].norm1
    direct_cam = getattr(pytorch_grad_cam, cls_name)(model=m, target_layers=[layer],
                                                     reshape_transform=reference_transform(family))
    if cls_name == "ScoreCAM":
        direct_cam.batch_size = 32
    try:
        direct = direct_cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    finally:
        direct_cam.activations_and_grads.release()
    m.zero_grad(set_to_none=True)
    extra = FAST.get(name, {})
    full = ALL_METHODS[name](m, x, targets, size="input", **extra)
    grid = ALL_METHODS[name](m, x, targets, size="grid", **extra)
    assert full.shape == (2, 28, 28) and grid.shape == (2, 7, 7)
    np.testing.assert_allclose(full, direct, atol=1e-6)
    # the library's input-size map is its own resize of the grid map, then its min-max scaling
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(grid.astype(np.float32), (28, 28))), direct, atol=1e-5)
    assert_clean(m)


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_captum_equals_library(embedded, family):
    """In float64: the wrapper and captum called directly batch the same passes differently, and float32
    sums of gradients that cancel differ by far more than their own rounding (up to 1 % of a value near
    1e-4 was seen); in float64 the same sums agree to ~1e-12 of their terms."""
    import copy

    from captum.attr import IntegratedGradients, KernelShap, NoiseTunnel, Occlusion, Saliency

    m = copy.deepcopy(embedded[family]).double()
    x, targets = noisy_input().double(), [3, 7]
    t = torch.tensor(targets)
    mean, std = m.pretrained_cfg["mean"], m.pretrained_cfg["std"]
    black = (-torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)).view(1, 3, 1, 1).expand_as(x)
    direct = IntegratedGradients(m).attribute(x, baselines=black, target=t, n_steps=16)
    np.testing.assert_allclose(attribution.integrated_gradients(m, x, targets, n_steps=16),
                               direct.abs().sum(1).double().numpy(), rtol=1e-6, atol=1e-9)
    means = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    direct = IntegratedGradients(m).attribute(x, baselines=means, target=t, n_steps=8)
    np.testing.assert_allclose(attribution.integrated_gradients(m, x, targets, n_steps=8, baseline="mean"),
                               direct.abs().sum(1).double().numpy(), rtol=1e-6, atol=1e-9)

    p = m.patch_embed.patch_size[0]
    direct = Occlusion(m).attribute(x, sliding_window_shapes=(3, p, p), strides=(3, p, p), baselines=means, target=t)
    np.testing.assert_allclose(attribution.occlusion(m, x, targets), direct.mean(1).double().numpy(), atol=1e-6)

    rows = []
    for i in range(2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            rows.append(NoiseTunnel(Saliency(m)).attribute(x[i:i + 1], nt_type="smoothgrad", nt_samples=4,
                                                           stdevs=0.3, target=t[i:i + 1], abs=False))
    np.testing.assert_allclose(attribution.smoothgrad(m, x, targets, nt_samples=4, seed=5),
                               torch.cat(rows).abs().sum(1).double().numpy(), rtol=1e-6, atol=1e-9)

    mask = (torch.arange(28)[:, None] // p) * (28 // p) + torch.arange(28)[None, :] // p
    rows = []
    for i in range(2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            rows.append(KernelShap(m).attribute(x[i:i + 1], baselines=means[i:i + 1], target=t[i:i + 1],
                                                feature_mask=mask.view(1, 1, 28, 28), n_samples=60))
    np.testing.assert_allclose(attribution.kernel_shap(m, x, targets, n_samples=60, seed=2),
                               torch.cat(rows).mean(1).double().numpy(), atol=1e-6)
    segments = (torch.arange(28)[:, None] >= 14).long() * 2 + (torch.arange(28)[None, :] >= 14).long()
    out = attribution.kernel_shap(m, x[:1], targets[:1], n_samples=30, segments=segments.numpy())
    assert len(np.unique(out[0])) <= 4  # one value per quadrant superpixel
    assert_clean(m)


def test_baselines():
    m = VisionTransformer(img_size=28, patch_size=4, embed_dim=8, depth=1, num_heads=1, num_classes=2)
    x = noisy_input()
    black = baseline_tensor(m, x, "black")
    from timm.data import resolve_model_data_config

    config = resolve_model_data_config(m)
    mean, std = np.array(config["mean"]), np.array(config["std"])
    np.testing.assert_allclose(black[0, :, 0, 0].numpy(), -mean / std, rtol=1e-6)
    const = torch.full_like(x, 2.0)
    np.testing.assert_allclose(baseline_tensor(m, const, "blur").numpy(), 2.0, rtol=1e-6)
    blurred = baseline_tensor(m, x, "blur", blur_sigma=3.0)
    assert blurred.std() < 0.5 * x.std()
    np.testing.assert_allclose(baseline_tensor(m, x, "mean")[:, :, 5, 9], x.mean(dim=(2, 3)), rtol=1e-6)


def test_pool_to_grid():
    a = np.arange(2 * 4 * 6, dtype=float).reshape(2, 4, 6)
    pooled = pool_to_grid(a, (2, 3))
    assert pooled[0, 0, 0] == a[0, 0, 0] + a[0, 0, 1] + a[0, 1, 0] + a[0, 1, 1]
    assert np.isclose(pooled.sum(), a.sum())


# ----------------------------------------------------------------------------- LRP


def manual_cp_lrp(model: VisionTransformer, x: torch.Tensor, target: int) -> torch.Tensor:
    """Hand-written forward of the token-pooled, final-norm-free ViT with the CP-LRP detaches,
    then gradient × input: an independent reference for the hook-based implementation."""
    def ln(t, mod):
        mu = t.mean(-1, keepdim=True)
        sd = (t.var(-1, keepdim=True, unbiased=False) + mod.eps).sqrt().detach()
        return (t - mu) / sd * mod.weight + mod.bias

    def gelu(t):
        return t * (F.gelu(t) / t).detach()

    x = x.detach().clone().requires_grad_(True)
    b = x.shape[0]
    t = F.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=4).flatten(2).transpose(1, 2)
    t = torch.cat([model.cls_token.expand(b, -1, -1), t], 1) + model.pos_embed
    for blk in model.blocks:
        a = blk.attn
        qkv = F.linear(ln(t, blk.norm1), a.qkv.weight, a.qkv.bias).reshape(b, -1, 3, a.num_heads, a.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        probs = ((q * a.scale) @ k.transpose(-2, -1)).softmax(-1).detach()
        t = t + F.linear((probs @ v).transpose(1, 2).reshape(b, -1, a.num_heads * a.head_dim),
                         a.proj.weight, a.proj.bias)
        hidden = gelu(F.linear(ln(t, blk.norm2), blk.mlp.fc1.weight, blk.mlp.fc1.bias))
        t = t + F.linear(hidden, blk.mlp.fc2.weight, blk.mlp.fc2.bias)
    logit = F.linear(t[:, 0], model.head.weight, model.head.bias)[:, target].sum()
    (grad,) = torch.autograd.grad(logit, x)
    return (x * grad).detach()


def test_lrp_equals_hand_written_cp_lrp():
    torch.manual_seed(1)
    m = VisionTransformer(img_size=28, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3,
                          qkv_bias=True, global_pool="token", final_norm=False).double().eval()
    with torch.no_grad():
        for p in m.parameters():  # non-zero biases, β and embeddings everywhere
            p.add_(0.05 * torch.randn_like(p))
    x = noisy_input().double()
    result = lrp.lrp_relevance(m, x, [1, 2])
    for i, t in enumerate([1, 2]):
        torch.testing.assert_close(result.relevance[i], manual_cp_lrp(m, x[i:i + 1], t)[0], rtol=1e-9, atol=1e-12)
    assert np.allclose(lrp.lrp(m, x, [1, 2]), result.relevance.sum(1).numpy())
    assert_clean(m)


def conservation(model, x, target):
    m = copy.deepcopy(model).double()
    before = snapshot(m)
    r = lrp.lrp_relevance(m, x.double(), [target])
    with torch.no_grad():
        logit = float(m(x.double())[0, target])
    total = float(r.relevance.sum() + r.source_relevance[0])
    assert_clean(m, before)
    return r, logit, total


@pytest.mark.parametrize("name", ["vit_fmnist_patch4_28", "swin_fmnist_patch2_28"])
def test_lrp_conservation_embedded(name):
    from safetensors.torch import load_file

    from generator.models.embedded import weights_path

    m = timm.create_model(name).eval()
    m.load_state_dict(load_file(weights_path(name)))
    r, logit, total = conservation(m, noisy_input()[:1], 4)
    assert abs(float(r.logits[0]) - logit) < 1e-12
    assert abs(total - logit) <= 1e-9 * max(1.0, abs(logit))
    assert float(r.residual.max()) < 1e-12


def test_lrp_conservation_vit_base_random():
    torch.manual_seed(0)
    m = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    r, logit, total = conservation(m, x, 3)
    assert abs(total - logit) <= 1e-9 * max(1.0, abs(logit))
    assert float(r.residual.max()) < 1e-12


def test_lrp_error_inside_context_leaves_model_as_before(embedded):
    for m in embedded.values():
        before = snapshot(m)
        fused = [a.fused_attn for a in m.modules() if hasattr(a, "fused_attn")]
        with pytest.raises(ValueError, match="inside"):
            with lrp.conservative_propagation(m):
                assert not any(a.fused_attn for a in m.modules() if hasattr(a, "fused_attn"))
                assert any(len(mod._forward_hooks) for mod in m.modules())
                m(noisy_input())
                raise ValueError("raised inside")
        assert [a.fused_attn for a in m.modules() if hasattr(a, "fused_attn")] == fused
        assert_clean(m, before)


def test_lrp_rejects_an_unhandled_nonlinearity():
    m = VisionTransformer(img_size=28, patch_size=4, embed_dim=8, depth=1, num_heads=1, num_classes=2,
                          act_layer=torch.nn.Tanh).eval()
    before = snapshot(m)
    with pytest.raises(lrp.LRPError, match="Tanh"):
        lrp.lrp(m, noisy_input()[:1], [0])
    assert_clean(m, before)


def test_lrp_values_forward_unchanged(embedded):
    """The hooks change gradients only: logits inside the context equal the plain ones."""
    for m in embedded.values():
        x = noisy_input()
        with torch.no_grad():
            plain = m(x)
            with lrp.conservative_propagation(m):
                inside = m(x)
        torch.testing.assert_close(inside, plain, rtol=1e-5, atol=1e-5)


def test_registry():
    """The methods the gallery wraps and the resolution each map comes at, written out by hand: the CAMs
    weight the token grid of the target layer; captum's methods and LRP attribute to input pixels."""
    assert {cls.label: cls.resolution for cls in registered_methods() if cls.wraps} == {
        "Grad-CAM": "grid", "HiResCAM": "grid", "Grad-CAM++": "grid", "EigenCAM": "grid", "Score-CAM": "grid",
        "Integrated Gradients": "pixel", "SmoothGrad": "pixel", "Occlusion": "pixel", "KernelSHAP": "pixel",
        "LRP": "pixel"}
