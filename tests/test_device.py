"""The device path, checked on the CPU: every section runs its model on ``model.device`` (an explicit
torch device here) and returns arrays, not tensors; the batch rule gives accelerators their batch.
Whether every tensor reaches the model on its device can only fail on an accelerator: `bench/gpu_check.py`
runs every section on CUDA and compares it with the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from generator.config.loading import parse_config
from generator.data.images import scan_images
from generator.models.loaded import ACCELERATOR_BATCH, auto_batch_size, load_model
from generator.pipeline.plan import compute_job
from generator.relevance.registry import RelevanceStore
from generator.sections import SECTIONS

from .conftest import CHEAP_METHODS, ROOT, write_synthetic_images


def test_auto_batch_rule_for_accelerators():
    for device in ("cuda", "cuda:1", torch.device("cuda", 0), "mps"):
        assert auto_batch_size(35e9, device) == ACCELERATOR_BATCH
    assert auto_batch_size(35e9, torch.device("cpu")) == 8  # ViT-B/16 on a CPU


def test_no_section_hard_codes_a_device():
    for path in (ROOT / "generator").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert ".cuda(" not in text, path


@pytest.mark.parametrize("arch", ["vit_fmnist_patch4_28", "swin_fmnist_patch2_28"])
def test_every_section_feeds_the_model_on_its_device(arch, tmp_path: Path):
    images_dir = tmp_path / "images"
    write_synthetic_images(images_dir, count=1, size=28)
    config = parse_config({
        "title": "device", "images": str(images_dir), "output": str(tmp_path / "build"),
        "site_dir": str(tmp_path / "site"), "models": [{"name": "m", "arch": arch, "weights": "random:0"}],
        "sections": {"lime": {"num_samples": 40, "segmentation": "slic", "segmentation_params": {"n_segments": 8}},
                     "probe": {"enabled": False},
                     "faithfulness": {"grid": 4, "step": 4, "random_seeds": [0], "randomise_blocks": 0}},
        "methods": {**CHEAP_METHODS, "lime": {"enabled": False}},
    })
    device = torch.device("cpu")
    model = load_model(config.models[0], device)
    assert model.device == device and next(model.module.parameters()).device == device
    seen: list[str] = []

    def check(module, args, kwargs):  # on the CPU every tensor is on the model's device: count passes only
        if any(isinstance(value, torch.Tensor) for value in [*args, *kwargs.values()]):
            seen.append(type(module).__name__)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: check(m, a, {}))
    try:
        images, _ = scan_images(images_dir)
        ran = []
        for cls in SECTIONS:
            section = cls(config)
            if not (section.enabled() and section.per_image and section.applies_to(model)
                    and section.applies_to_image(images[0])):
                continue
            section.store = RelevanceStore(None)
            record = compute_job(section, model, images[0])
            assert all(isinstance(a, np.ndarray) for a in record.arrays.values()), section.name
            ran.append(section.name)
    finally:
        handle.remove()
    assert seen, "the hook saw no forward pass"
    expected = {"heads", "rollout", "lime", "faithfulness"} if arch.startswith("vit") else {"swin", "lime",
                                                                                            "faithfulness"}
    assert expected <= set(ran)
