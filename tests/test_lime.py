"""LIME on the lime package: same explanation as plain lime_image, seeded, validated, and
right on a classifier whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from lime import lime_base, lime_image

from generator.relevance.lime import GramLimeBase, explain_image, predict_fn, region_iou, region_mask


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    model = timm.create_model("vit_fmnist_patch4_28", pretrained=False).eval()
    return model


def natural_image(size=28, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[4:14, 3:20] = (200, 40, 40)
    img[15:26, 10:25] = (40, 180, 60)
    img[2:8, 20:27] = (30, 30, 220)
    return np.clip(img.astype(int) + rng.integers(0, 25, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed,num_features", [(3, 5), (11, 2), (5, 6)])
def test_same_explanation_as_plain_lime(tiny_vit, seed, num_features):
    image = natural_image(seed=seed)
    ours = explain_image(tiny_vit, image, num_samples=300, seed=seed, batch_size=32, num_features=num_features)
    plain = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        image, predict_fn(tiny_vit, 10), top_labels=2, num_samples=300, num_features=num_features, random_seed=seed)
    assert np.array_equal(ours.segments, plain.segments)
    assert ours.top_labels == plain.top_labels
    assert ours.local_exp.keys() == plain.local_exp.keys()
    for label in plain.local_exp:
        assert [seg for seg, _ in ours.local_exp[label]] == [seg for seg, _ in plain.local_exp[label]]
        for (_, a), (_, b) in zip(ours.local_exp[label], plain.local_exp[label]):
            assert abs(a - b) < 1e-4
        assert abs(ours.intercept[label] - plain.intercept[label]) < 1e-6
    assert abs(ours.score - plain.score) < 1e-6  # lime keeps the last label's fit score


def test_vectorised_forward_selection_picks_what_lime_picks():
    rng = np.random.default_rng(1)
    for _ in range(25):
        n, d = int(rng.integers(40, 900)), int(rng.integers(2, 60))
        data = rng.integers(0, 2, (n, d))
        data[0] = 1
        beta = rng.normal(size=d) * (rng.random(d) < 0.3)
        labels = 1 / (1 + np.exp(-(data @ beta + rng.normal(scale=0.3, size=n))))
        weights = np.exp(-3 * rng.random(n))
        k = int(rng.integers(1, 7))
        expected = lime_base.LimeBase(lambda x: x, random_state=0).forward_selection(data, labels, weights, k)
        got = GramLimeBase(lambda x: x, random_state=0).forward_selection(data, labels, weights, k)
        assert np.array_equal(expected, got)


@pytest.mark.filterwarnings("ignore:An ill-conditioned matrix")  # sklearn's, inside lime's own loop
def test_vectorised_forward_selection_degenerate_cases_follow_lime():
    rng = np.random.default_rng(2)
    data = rng.integers(0, 2, (200, 8))
    data[:, 5] = data[:, 2]  # an exact duplicate: ties, then a singular fit
    weights = np.ones(200)
    labels = 0.3 * data[:, 2] + 0.1 * data[:, 7] + 0.01 * rng.normal(size=200)
    constant = np.full(200, 0.5)  # R² undefined for every candidate
    for y in (labels, constant):
        expected = lime_base.LimeBase(lambda x: x, random_state=0).forward_selection(data, y, weights, 4)
        got = GramLimeBase(lambda x: x, random_state=0).forward_selection(data, y, weights, 4)
        assert np.array_equal(expected, got)


def test_seed_determinism(tiny_vit):
    image = natural_image(seed=1)
    a = explain_image(tiny_vit, image, num_samples=100, seed=7)
    b = explain_image(tiny_vit, image, num_samples=100, seed=7)
    c = explain_image(tiny_vit, image, num_samples=100, seed=8)
    label = a.top_labels[0]
    assert np.array_equal(region_mask(a, label, 5), region_mask(b, label, 5))
    assert a.local_exp[label] == b.local_exp[label]
    assert a.local_exp[label] != c.local_exp[label] or not np.array_equal(a.segments, c.segments)


class RegionClassifier(torch.nn.Module):
    """Class 1's logit is the mean brightness of one known region; class 0's is constant."""

    num_classes = 2

    def __init__(self, rows: slice, cols: slice):
        super().__init__()
        self.rows, self.cols = rows, cols
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.pretrained_cfg = {"input_size": (3, 28, 28), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
                               "crop_pct": 1.0, "interpolation": "bilinear"}

    def forward(self, x):
        region = x[:, :, self.rows, self.cols].mean(dim=(1, 2, 3))
        return torch.stack([torch.full_like(region, 100.0) + self.anchor, 100.0 + region * 10.0], dim=1)


def test_region_classifier_ranks_the_region_first():
    image = natural_image(seed=2)
    image[15:26, 10:25] = 255  # the region the classifier looks at is bright
    model = RegionClassifier(slice(15, 26), slice(10, 25)).eval()
    explanation = explain_image(model, image, num_samples=400, seed=0, top_labels=2, hide_color=0,
                                segmentation="slic", segmentation_params={"n_segments": 20, "compactness": 20.0})
    ranked = [seg for seg, w in explanation.local_exp[1] if w > 0]
    inside = np.zeros(image.shape[:2], bool)
    inside[15:26, 10:25] = True
    coverage = {seg: (inside & (explanation.segments == seg)).sum() / (explanation.segments == seg).sum()
                for seg in np.unique(explanation.segments)}
    covering = {seg for seg, c in coverage.items() if c > 0.5}
    assert covering, "the segmentation should have superpixels inside the region"
    assert set(ranked[: len(covering)]) == covering


@pytest.mark.parametrize("kwargs, fragment", [
    ({"num_samples": 1}, "num_samples"), ({"num_features": 0}, "num_features"),
    ({"segmentation": "watershed"}, "unknown segmentation"), ({"top_labels": 11}, "top_labels"),
    ({"segmentation_params": {"kernel": 3}}, "unknown quickshift parameters"),
])
def test_bad_arguments(tiny_vit, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        explain_image(tiny_vit, natural_image(), **kwargs)


def test_predict_fn_matches_model_and_iou():
    torch.manual_seed(0)
    model = timm.create_model("vit_fmnist_patch4_28", pretrained=False).eval()
    images = np.stack([natural_image(seed=s) for s in range(5)])
    probs = predict_fn(model, batch_size=2)(images)
    cfg = model.pretrained_cfg
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) \
        / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x).softmax(-1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert region_iou(a, b) == pytest.approx(4 / 12)


def test_auto_batch_size_gives_the_same_explanation(tiny_vit):
    image = natural_image(seed=4)
    auto = explain_image(tiny_vit, image, num_samples=120, seed=4)
    fixed = explain_image(tiny_vit, image, num_samples=120, seed=4, batch_size=7)
    assert auto.top_labels == fixed.top_labels
    assert auto.local_exp.keys() == fixed.local_exp.keys() and auto.local_exp
    for label in auto.local_exp:
        assert [s for s, _ in auto.local_exp[label]] == [s for s, _ in fixed.local_exp[label]]
        assert np.allclose([w for _, w in auto.local_exp[label]], [w for _, w in fixed.local_exp[label]], atol=1e-6)
