"""Weight sources, safe checkpoint loading, class names and preprocessing."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform

from generator.config.loading import ModelConfig
from generator.models.loaded import load_model
from generator.models.loading import WeightsError, preprocess, state_dict_sha256


def state_of(arch: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False).state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_file_source_loads_through_timm(tmp_path, suffix):
    arch = "vit_fmnist_patch4_28"
    state = state_of(arch, 5)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    loaded = load_model(ModelConfig(name="m", arch=arch, weights=f"file:{path}"))
    for key, value in state.items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    assert not loaded.random_weights
    assert loaded.family == "vit"
    assert loaded.class_names[0] == "T-shirt/top"
    assert loaded.weights_sha256 == state_dict_sha256(loaded.module)
    assert not loaded.module.training


def test_pickle_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Payload()}, fh)
    with pytest.raises(WeightsError, match="checkpoint refused"):
        load_model(ModelConfig(name="evil", arch="vit_fmnist_patch4_28", weights=f"file:{path}"))
    assert not marker.exists(), "the pickle payload ran"


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in state_of("swin_fmnist_patch2_28", 0).items()}, str(path))
    with pytest.raises(WeightsError, match="does not fit vit_fmnist_patch4_28"):
        load_model(ModelConfig(name="wrong", arch="vit_fmnist_patch4_28", weights=f"file:{path}"))


def test_hub_offline_names_model_and_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        load_model(ModelConfig(name="ViT-B", arch="vit_base_patch16_224", weights="hub"))
    message = str(err.value)
    assert "ViT-B" in message and "file:" in message and "HF_HUB_OFFLINE" in message


def test_random_weights_are_seeded_and_labelled():
    a = load_model(ModelConfig(name="r", arch="swin_fmnist_patch2_28", weights="random:3"))
    b = load_model(ModelConfig(name="r", arch="swin_fmnist_patch2_28", weights="random:3"))
    c = load_model(ModelConfig(name="r", arch="swin_fmnist_patch2_28", weights="random:4"))
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    assert a.random_weights and "random weights" in a.display_name
    assert a.family == "swin"


def test_imagenet_labels_and_unknown_arch():
    model = load_model(ModelConfig(name="vit", arch="vit_base_patch16_224", weights="random:0"))
    assert len(model.class_names) == 1000
    assert model.class_names[0].startswith("tench")
    with pytest.raises(WeightsError, match="unknown timm architecture"):
        load_model(ModelConfig(name="x", arch="vit_nonexistent_9", weights="random:0"))
    with pytest.raises(WeightsError, match=r"ResNet is a model no registered family explains \(families: vit, swin"):
        load_model(ModelConfig(name="cnn", arch="resnet18", weights="random:0"))


def test_label_list_from_config():
    cfg = ModelConfig(name="v", arch="vit_fmnist_patch4_28", weights="random:0", labels=("a", "b", "c"))
    model = load_model(cfg)
    assert model.class_names == ("a", "b", "c")
    assert model.module.num_classes == 3


def test_preprocess_equals_timm_transform():
    model = load_model(ModelConfig(name="vit", arch="vit_base_patch16_224", weights="random:0"))
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
    view, x = preprocess(model, rgb)
    expected = create_transform(**model.data_config, is_training=False)(Image.fromarray(rgb))
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    assert view.shape == (224, 224, 3) and view.dtype == np.uint8


def test_device_resolution(monkeypatch):
    from generator.models.loading import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="cuda"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_results_match_between_float_paths_on_cpu():
    """The device option moves model and inputs together; on CPU, batch-of-8 and single-image
    captures agree within float tolerance (what a GPU run is held to as well)."""
    from generator.attention.capture import vit_attention

    model = load_model(ModelConfig(name="v", arch="vit_fmnist_patch4_28", weights="random:0"), device="cpu")
    x = torch.randn(8, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, attn = vit_attention(model.module, x.to(model.device))
        single = torch.cat([vit_attention(model.module, x[i : i + 1])[1] for i in range(8)], dim=1)
    torch.testing.assert_close(attn, single, atol=1e-5, rtol=1e-4)


def test_auto_batch_size_follows_the_measured_rule():
    from generator.models.loaded import auto_batch_size
    from generator.models.loading import forward_flops

    model = load_model(ModelConfig(name="v", arch="vit_fmnist_patch4_28", weights="random:0"), device="cpu")
    # FLOP counter against a hand count of the embedded ViT's matmuls (patch embed, qkv, attention, proj, MLP, head)
    depth, dim, tokens, patch_pixels, classes = 6, model.module.embed_dim, 50, 4 * 4 * 3, 10
    mlp = model.module.blocks[0].mlp.fc1.out_features
    per_block = tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim + 2 * tokens * dim * mlp
    macs = 49 * patch_pixels * dim + depth * per_block + dim * classes
    assert len(model.module.blocks) == depth
    assert forward_flops(model.module, (28, 28)) == 2 * macs
    assert model.batch_size(7) == 7
    assert model.batch_size("auto") == auto_batch_size(2 * macs) == 64  # tiny model: the cap
    assert auto_batch_size(34e9) == 8  # ViT-B/16-sized: 300 GFLOP per batch
    assert auto_batch_size(31e9) == 8  # Swin-B-sized
    assert auto_batch_size(120e9) == 4  # ViT-L-sized: the floor
    assert auto_batch_size(34e9, "cuda") == 64
