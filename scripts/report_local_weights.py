"""Build configs/report.toml's three ImageNet architectures offline, with local random weights.

    python scripts/report_local_weights.py WORKDIR [--photo chelsea.jpg]

Writes ``file:`` safetensors from ``timm.create_model(arch, pretrained=False)`` (seeded) for
ViT-B/16, Swin-B and Swin-T into WORKDIR/weights, copies one photo (and its variants) into
WORKDIR/photos, and writes WORKDIR/report.toml: the study's config with those weights and the
heavy sections reduced (LIME 50 samples; probe and faithfulness off), so the real page layout of
the study's models can be built and read in a browser without the hub. The predictions mean
nothing (random weights), which every page says.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARCHS = {"ViT-B/16": "vit_base_patch16_224", "Swin-B": "swin_base_patch4_window7_224",
         "Swin-T": "swin_tiny_patch4_window7_224"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--photo", default="chelsea.jpg")
    args = parser.parse_args()
    work = args.workdir.resolve()
    (work / "weights").mkdir(parents=True, exist_ok=True)
    import timm
    import torch
    from safetensors.torch import save_file

    for name, arch in ARCHS.items():
        path = work / "weights" / f"{arch}.safetensors"
        if not path.is_file():
            torch.manual_seed(0)
            model = timm.create_model(arch, pretrained=False)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    source = ROOT / "images" / "photos"
    for item in source.iterdir():
        if item.name.startswith(args.photo):
            shutil.copy2(item, photos / item.name)
    (photos / "labels.csv").write_text(f"file,label\n{args.photo},tabby\n", encoding="utf-8")
    text = (ROOT / "configs" / "report.toml").read_text(encoding="utf-8")
    for name, arch in ARCHS.items():
        text = text.replace(f'arch = "{arch}"\nweights = "hub"',
                            f'arch = "{arch}"\nweights = "file:{work / "weights" / (arch + ".safetensors")}"')
    text = text.replace('images = "../images/photos"', f'images = "{photos}"')
    text = text.replace('output = "../build/report"', f'output = "{work / "build"}"')
    text = text.replace('site_dir = "../site-report"', f'site_dir = "{work / "site"}"')
    text = re.sub(r"num_samples = \d+", "num_samples = 50", text)
    text = text.replace('device = "auto"', 'device = "cpu"')
    text = text.replace('[sections.probe]\n', '[sections.probe]\nenabled = false\n')
    text += "\n[sections.faithfulness]\nenabled = false\n"
    (work / "report.toml").write_text(text, encoding="utf-8")
    print(work / "report.toml")


if __name__ == "__main__":
    main()
