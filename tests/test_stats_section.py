"""The attention-statistics section in a build: one cached job per model over the image set,
its figures, its rule-made sentences, and the claims chapter fed from it."""

from __future__ import annotations


import pytest

import generator
from generator.config.loading import load_config
from generator.analysis.findings import study_claims
from generator.sections.stats import StatsSection

from .behaviour_scan import unmarked_behaviour
from .conftest import ROOT, write_synthetic_images

OTHERS_OFF = "".join(f"[sections.{s}]\nenabled = false\n"
                     for s in ("heads", "rollout", "swin", "lime", "perturb", "probe", "faithfulness", "maps"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stats")
    write_synthetic_images(tmp / "images", count=3, size=28)
    weights = ROOT / "generator" / "models" / "weights"
    (tmp / "gallery.toml").write_text(f'''
title = "Stats"
images = "{tmp / 'images'}"
output = "{tmp / 'build'}"
site_dir = "{tmp / 'site'}"
[[models]]
name = "ViT"
arch = "vit_fmnist_patch4_28"
weights = "file:{weights / 'vit_fmnist_patch4_28.safetensors'}"
[[models]]
name = "Swin"
arch = "swin_fmnist_patch2_28"
weights = "file:{weights / 'swin_fmnist_patch2_28.safetensors'}"
[sections.stats]
bootstrap_samples = 200
{OTHERS_OFF}''', encoding="utf-8")
    config = load_config(tmp / "gallery.toml")
    return tmp, config, generator.build(config, site=False)


def test_one_job_per_model_over_the_image_set(built):
    tmp, config, outcome = built
    assert outcome.run.ok, outcome.run.failures
    stats = [r for r in outcome.run.results if r.section == "stats"]
    assert [(r.model, r.image) for r in stats] == [("ViT", "image-set"), ("Swin", "image-set")]
    vit, swin = (r.meta for r in stats)
    assert vit["n_images"] == swin["n_images"] == 3
    assert vit["blocks"] == len(vit["per_block"]["entropy"]["mean"])
    assert {f["claim_id"] for f in vit["findings"]} >= {"vit_spatial_then_content", "vit_growing_sparsity",
                                                        "vit_later_blocks_alike", "vit_late_sparse_rows"}
    assert {f["claim_id"] for f in swin["findings"]} == {"swin_head_shapes", "swin_position_bias"}
    for iv in vit["claim_numbers"].values():
        assert iv["low"] <= iv["mean"] <= iv["high"]
    assert set(stats[0].figures) == {"", "entropy", "positional", "similarity"}
    assert set(stats[1].figures) == {f"kernels-s{s}" for s in swin["stages"]}
    for r in stats:
        for ref in r.figures.values():
            assert (tmp / "build" / "docs" / ref.png).is_file()


def test_the_cache_key_follows_every_image(built):
    tmp, config, _ = built
    section = StatsSection(config)
    before = section.unit_params("image set")
    assert len(before["images"]) == 3
    path = next((tmp / "images").glob("*.png"))
    data = path.read_bytes()
    try:
        path.write_bytes(data + b"\0")  # any change of any image changes the key
        assert section.unit_params("image set") != before
    finally:
        path.write_bytes(data)
    again = generator.build(config, site=False)
    assert all(r.cached for r in again.run.results if r.section == "stats")


def test_chapters_carry_rule_made_sentences_only(built):
    tmp, _, _ = built
    docs = tmp / "build" / "docs" / "chapters"
    chapter = (docs / "attention-statistics.md").read_text(encoding="utf-8")
    assert chapter.count('<span class="finding"') >= 6
    assert "How the sentences on this page are made" in chapter
    claims = (docs / "claims.md").read_text(encoding="utf-8")
    for claim in study_claims():
        assert f'data-claim="{claim.claim_id}"' in claims
    assert "the faithfulness section is off" in claims and "the LIME section is off" in claims
    for page in docs.glob("*.md"):
        assert unmarked_behaviour(page.read_text(encoding="utf-8")) == [], page.name
