"""Image edits on synthetic images with known pixels, declaration errors, and Table I numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.analysis.perturb import (EditError, Variant, apply_variant, parse_variants, prediction_table,
                                        resolve_region)


def canvas() -> np.ndarray:
    """10×12 black image with a 2×3 white block at rows 1–2, cols 2–4, and a red pixel at (8, 10)."""
    img = np.zeros((10, 12, 3), np.uint8)
    img[1:3, 2:5] = 255
    img[8, 10] = (255, 0, 0)
    return img


def run(edits, image=None, others=None):
    return apply_variant(canvas() if image is None else image, Variant("v", tuple(edits)), others)


def test_move_fills_the_hole_and_pastes_at_target():
    out = run([{"op": "move", "box": [2, 1, 5, 3], "to": [6, 5], "fill": [0, 0, 0]}])
    expected = canvas()
    expected[1:3, 2:5] = 0
    expected[5:7, 6:9] = 255
    assert np.array_equal(out.image, expected) and out.notes == []


def test_move_with_mean_fill_and_clipping_is_reported():
    img = canvas()
    out = run([{"op": "move", "box": [2, 1, 5, 3], "to": [10, 9], "fill": "mean"}])
    mean = np.round(img.reshape(-1, 3).mean(0)).astype(np.uint8)
    assert np.array_equal(out.image[1, 2], mean)
    assert np.array_equal(out.image[9, 10:12], np.full((2, 3), 255, np.uint8))
    assert any("clipped" in n and "4 of 6 pixels lost" in n for n in out.notes)


def test_scale_about_centre_and_anchor():
    img = np.zeros((8, 8, 3), np.uint8)
    img[2:6, 2:6] = 200
    out = apply_variant(img, Variant("s", ({"op": "scale", "box": [2, 2, 6, 6], "factor": 0.5, "fill": [0, 0, 0]},)))
    expected = np.zeros_like(img)
    expected[3:5, 3:5] = 200
    assert np.array_equal(out.image, expected)
    out = apply_variant(img, Variant("s", ({"op": "scale", "box": [2, 2, 6, 6], "factor": 0.5, "anchor": "top-left",
                                            "fill": [0, 0, 0]},)))
    expected = np.zeros_like(img)
    expected[2:4, 2:4] = 200
    assert np.array_equal(out.image, expected)


def test_split_pushes_parts_apart():
    img = np.zeros((4, 10, 3), np.uint8)
    img[:, 3:7] = np.arange(4)[None, :, None] * 50 + 50  # columns 3..6 = 50, 100, 150, 200
    out = apply_variant(img, Variant("x", ({"op": "split", "box": [3, 0, 7, 4], "parts": 2, "axis": "x", "gap": 2,
                                            "fill": [0, 0, 0]},)))
    row = out.image[0, :, 0].tolist()
    assert row == [0, 0, 50, 100, 0, 0, 150, 200, 0, 0]


def test_erase_and_paste_from_another_image():
    other = np.full((5, 5, 3), 77, np.uint8)
    out = run([{"op": "erase", "box": [2, 1, 5, 3], "fill": [9, 9, 9]},
               {"op": "paste", "source": "other.png", "source_region": {"box": [0, 0, 2, 2]}, "to": [0, 0]}],
              others={"other.png": other})
    assert np.array_equal(out.image[1:3, 2:5], np.full((2, 3, 3), 9, np.uint8))
    assert np.array_equal(out.image[0:2, 0:2], np.full((2, 2, 3), 77, np.uint8))


def test_relative_box_and_mask_regions(tmp_path):
    from PIL import Image

    region = resolve_region({"rbox": [0.25, 0.1, 0.5, 0.3]}, (10, 12), None, "w")
    assert region.bbox == (1, 3, 3, 6)
    mask = np.zeros((10, 12), np.uint8)
    mask[4, 4:6] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    region = resolve_region({"mask": "m.png"}, (10, 12), tmp_path, "w")
    assert region.mask.sum() == 2 and region.bbox == (4, 5, 4, 6)


@pytest.mark.parametrize("edit, fragment", [
    ({"op": "mve", "box": [0, 0, 2, 2]}, "unknown op 'mve'; did you mean 'move'"),
    ({"op": "move", "box": [0, 0, 2, 2], "to": [1, 1], "colour": 3}, "unknown keys ['colour']"),
    ({"op": "erase"}, "exactly one of box, rbox or mask"),
])
def test_parser_rejects_bad_declarations(edit, fragment):
    with pytest.raises(EditError) as err:
        parse_variants([{"name": "Bad one", "edit": [edit]}], "decl.toml")
    assert fragment in str(err.value) and "Bad one" in str(err.value) and "edit 1" in str(err.value)
    with pytest.raises(EditError, match="duplicate variant name"):
        parse_variants([{"name": "a", "edit": [{"op": "erase", "box": [0, 0, 1, 1]}]}] * 2, "decl.toml")


@pytest.mark.parametrize("box, fragment", [([0, 0, 0, 3], "zero-size"), ([5, 5, 20, 8], "outside"),
                                           ([-1, 0, 3, 3], "outside")])
def test_bad_regions_name_variant_and_edit(box, fragment):
    with pytest.raises(EditError) as err:
        apply_variant(canvas(), Variant("Loc", ({"op": "erase", "box": box},)))
    assert fragment in str(err.value) and "'Loc'" in str(err.value) and "edit 1" in str(err.value)


def test_table_equals_the_models_softmax():

    from generator.config.loading import ModelConfig
    from generator.models.loaded import load_model
    from generator.models.loading import preprocess

    model = load_model(ModelConfig(name="v", arch="vit_fmnist_patch4_28", weights="random:0"))
    pictures = [canvas(), run([{"op": "move", "box": [2, 1, 5, 3], "to": [6, 5]}]).image]
    batch = torch.stack([preprocess(model, p)[1] for p in pictures])
    with torch.no_grad():
        probs = model.module(batch).softmax(-1).double().numpy()
    table = prediction_table(["Original", "Moved"], probs, model.class_names, k=3)
    assert list(table.index) == [0, 1]
    for i, row in table.iterrows():
        order = np.argsort(-probs[i])
        assert row["1st class"] == model.class_names[order[0]]
        assert row["1st %"] == round(100 * probs[i, order[0]], 2)
        assert row["3rd %"] == round(100 * probs[i, order[2]], 2)
        top = int(np.argmax(probs[0]))
        assert row["Original top-1 rank"] == int(np.nonzero(order == top)[0][0]) + 1
        assert row["Original top-1 %"] == round(100 * probs[i, top], 2)
