"""The library methods on the relevance-map registry, and the faithfulness comparison built on them.

Through the registry: settings and their limits, the region of a synthetic classifier ranks first,
maps equal the wrappers (and the libraries) called directly, a batch of 2 equals two batches of 1,
seeded maps repeat, nothing is left on the model after a failing map, LRP's conservation terms.
The comparison: the batched curves equal the per-order reference, ROAD equals pytorch-grad-cam's
metric called directly, bootstrap intervals and rank-first counts on known inputs, the one number
format, and a flagged method never tops a ranking unmarked.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch

import generator.models.embedded  # noqa: F401  (registers the embedded timm models)
import generator.sections  # noqa: F401  (registers the built-in relevance methods)
from generator.config.loading import ConfigError, parse_config
from generator.models.identity import ModelIdentity
from generator.data.inputs import ModelInput
from generator.models.loaded import LoadedModel
from generator.relevance import attribution, cam, lrp
from generator.relevance.library import slic_segments
from generator.analysis.bootstrap import bootstrap_intervals, rank_first_counts
from generator.analysis.faithfulness import faithfulness_curves, perturbation_curve, pixel_order_map, road_scores
from generator.render.text import decimals_to_separate, format_number
from generator.relevance.registry import RelevanceStore, map_specs, registered_methods
from generator.config.settings import ModelConfig

from .test_methods import DECOY, REGION, assert_clean, region_cell_index, snapshot, watching_vit

#: The registered methods that wrap a library function, in registration order.
LIBRARY_METHODS = tuple(cls.name for cls in registered_methods() if cls.wraps)

FAST = {"score-cam": {"batch_size": 32}, "integrated-gradients": {"n_steps": 16},
        "smoothgrad": {"nt_samples": 8}, "kernel-shap": {"n_samples": 120}}


def config(tmp_path, methods: dict | None = None):
    """A config whose [methods] holds only the library methods (FAST settings plus ``methods``)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    table = {cls.name: {"enabled": False} for cls in registered_methods() if cls.name not in LIBRARY_METHODS}
    for name in LIBRARY_METHODS:
        table[name] = {**FAST.get(name, {}), **(methods or {}).get(name, {})}
    return parse_config({"title": "t", "images": str(tmp_path / "images"), "output": str(tmp_path / "out"),
                         "site_dir": str(tmp_path / "site"),
                         "models": [{"name": "m", "arch": "vit_fmnist_patch4_28", "weights": "random:0"}],
                         "methods": table})


def loaded(module: torch.nn.Module, family: str) -> LoadedModel:
    from timm.data import resolve_model_data_config

    from generator.families import family_named

    data = resolve_model_data_config(module)
    size = (3, *(int(v) for v in module.patch_embed.img_size))  # a hand-built model's config may say 224
    identity = ModelIdentity(family=family, data_config={**data, "input_size": size},
                             class_names=tuple(str(i) for i in range(module.num_classes)),
                             weights_sha256=f"test-{id(module)}", source="test", random_weights=True, structure="",
                             capabilities=tuple(family_named(family).model_capabilities(module)))
    return LoadedModel(config=ModelConfig(name=f"test-{family}", arch="test", weights="random:0"), identity=identity,
                       device_spec="cpu", _module=module)


def image_input(x: torch.Tensor) -> ModelInput:
    """One (3, H, W) input; the view is its first channel, scaled to uint8 (only KernelSHAP's superpixels read it)."""
    v = x.detach().float()
    v = ((v - v.min()) / (v.max() - v.min() + 1e-12) * 255).round().to(torch.uint8)
    return ModelInput(view=v.permute(1, 2, 0).numpy().copy(), x=x.detach().clone())


def image(slug: str = "img"):
    return SimpleNamespace(sha256=slug, slug=slug)


def spec_of(cfg, name: str, model: LoadedModel):
    return next(s for s in map_specs(cfg, model) if s.method.name == name)


@pytest.fixture(scope="module")
def watch():
    return watching_vit()


@pytest.fixture(scope="module")
def pictures() -> torch.Tensor:
    from .test_methods import _bright_patch

    x = torch.zeros(2, 3, 28, 28)
    _bright_patch(x, 0, REGION)
    _bright_patch(x, 1, REGION)
    _bright_patch(x, 1, DECOY)
    return x


@pytest.fixture(scope="module")
def embedded() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"vit": timm.create_model("vit_fmnist_patch4_28").eval(),
            "swin": timm.create_model("swin_fmnist_patch2_28").eval()}


# ----------------------------------------------------------------------------- registry and settings


def test_every_library_method_is_registered_with_its_own_settings(tmp_path):
    names = [cls.name for cls in registered_methods()]
    assert set(LIBRARY_METHODS) <= set(names)
    # every concrete method class the module defines is on the registry (the module's contents are the oracle)
    from generator.relevance import library as registered

    defined = {obj.name for obj in vars(registered).values() if isinstance(obj, type)
               and issubclass(obj, registered._LibraryMethod) and getattr(obj, "name", None)}
    assert defined == set(LIBRARY_METHODS) and len(defined) >= 10
    cfg = config(tmp_path)
    assert [s.method.name for s in map_specs(cfg)] == list(LIBRARY_METHODS)
    defaults = parse_config({"title": "t", "images": str(tmp_path / "images"), "output": str(tmp_path / "o"),
                             "site_dir": str(tmp_path / "s"),
                             "models": [{"name": "m", "arch": "vit_fmnist_patch4_28", "weights": "random:0"}]}).methods
    assert defaults.integrated_gradients.baseline == "black" and defaults.integrated_gradients.n_steps == 50
    assert defaults.integrated_gradients.internal_batch_size == "auto"
    assert (defaults.smoothgrad.nt_samples, defaults.smoothgrad.stdevs, defaults.smoothgrad.seed) == (25, 0.3, 0)
    assert defaults.occlusion.window == "patch" and defaults.kernel_shap.features == "patch"
    assert defaults.score_cam.batch_size == "auto" and "forward pass per channel" in type(defaults.score_cam).__doc__


@pytest.mark.parametrize("table, key, words", [
    ({"integrated-gradients": {"n_steps": 1}}, "methods.integrated-gradients.n_steps", "≥ 2"),
    ({"integrated-gradients": {"baseline": "blurred"}}, "methods.integrated-gradients.baseline", "did you mean 'blur'"),
    ({"integrated-gradients": {"internal_batch_size": 0}}, "methods.integrated-gradients.internal_batch_size", "≥ 1"),
    ({"smoothgrad": {"stdevs": -0.1}}, "methods.smoothgrad.stdevs", "> 0"),
    ({"occlusion": {"window": [0, 4]}}, "methods.occlusion.window", ""),
    ({"kernel-shap": {"features": "superpixels"}}, "methods.kernel-shap.features", "did you mean 'superpixel'"),
    ({"kernel-shap": {"n_samples": 1}}, "methods.kernel-shap.n_samples", "≥ 2"),
    ({"score-cam": {"batch_size": "all"}}, "methods.score-cam.batch_size", ""),
    ({"gradcam": {}}, "methods.gradcam", "did you mean 'grad-cam'"),
])
def test_settings_limits_are_validated_up_front(tmp_path, table, key, words):
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError) as err:
        parse_config({"title": "t", "images": str(tmp_path / "images"), "output": str(tmp_path / "o"),
                      "site_dir": str(tmp_path / "s"), "models": [], "methods": table})
    assert err.value.key.startswith(key) and words in str(err.value)


# ----------------------------------------------------------------------------- correctness through the registry


def to_cells(values: np.ndarray) -> np.ndarray:
    if values.shape == (7, 7):
        return values
    return values.reshape(7, 4, 7, 4).mean(axis=(1, 3))


@pytest.mark.parametrize("name", [n for n in LIBRARY_METHODS if n != "eigencam"])
def test_region_ranks_first_through_the_registry(tmp_path, watch, pictures, name):
    """The synthetic ViT's class 0 reads only the patch at REGION: every method ranks it first (EigenCAM is
    class-agnostic and is checked in test_methods)."""
    cfg = config(tmp_path)
    model = loaded(watch, "vit")
    relevance = RelevanceStore(None).get(spec_of(cfg, name, model), model, image(), image_input(pictures[0]), 0)
    cells = to_cells(relevance.values).reshape(-1)
    assert int(np.argsort(-cells, kind="stable")[0]) == region_cell_index(), name
    assert cells[region_cell_index()] > 0


@pytest.mark.parametrize("family", ["vit", "swin"])
@pytest.mark.parametrize("name", LIBRARY_METHODS)
def test_registered_map_equals_the_wrapper_and_a_batch_of_two(tmp_path, embedded, family, name):
    """The registered map is the wrapper's map for the image (reshaping only), and the wrapper's batch of
    2 gives each image's registered map."""
    cfg = config(tmp_path)
    module = embedded[family]
    model = loaded(module, family)
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    targets = [3, 7]
    spec = spec_of(cfg, name, model)
    maps = [RelevanceStore(None).get(spec, model, image(f"i{i}"), image_input(x[i]), t).values
            for i, t in enumerate(targets)]
    s = spec.method.settings
    auto = model.batch_size("auto")
    calls = {
        "grad-cam": lambda xb, tb: cam.gradcam(module, xb, tb), "hirescam": lambda xb, tb: cam.hirescam(module, xb, tb),
        "grad-cam-plusplus": lambda xb, tb: cam.gradcam_plusplus(module, xb, tb),
        "eigencam": lambda xb, tb: cam.eigencam(module, xb, tb),
        "score-cam": lambda xb, tb: cam.scorecam(module, xb, tb, batch_size=32),
        "integrated-gradients": lambda xb, tb: attribution.integrated_gradients(
            module, xb, tb, n_steps=16, internal_batch_size=auto),
        "smoothgrad": lambda xb, tb: attribution.smoothgrad(module, xb, tb, nt_samples=8, stdevs=s.stdevs,
                                                           nt_samples_batch_size=auto, seed=0),
        "occlusion": lambda xb, tb: attribution.occlusion(module, xb, tb, perturbations_per_eval=auto),
        "kernel-shap": lambda xb, tb: attribution.kernel_shap(module, xb, tb, n_samples=120,
                                                             perturbations_per_eval=auto, seed=0),
        "lrp": lambda xb, tb: lrp.lrp(module, xb, tb),
    }
    for i, t in enumerate(targets):
        assert np.array_equal(maps[i], calls[name](x[i:i + 1], [t])[0]), f"{name}: image {i}"
    both = calls[name](x, targets)
    scale = max(np.abs(both).max(), 1e-12)
    # Score-CAM min-max scales every channel before masking with it: the ~3e-8 float32 difference between a
    # forward of 2 images and of 1 reaches ~2e-5 of the [0, 1] map on the random-weights Swin (library numerics)
    tolerance = 1e-4 if name == "score-cam" else 1e-5
    for i in range(2):
        np.testing.assert_allclose(maps[i], both[i], atol=tolerance * scale, rtol=0)
    assert_clean(module)


def test_registered_maps_equal_the_libraries_called_directly(tmp_path, embedded):
    """Grad-CAM, Integrated Gradients and Occlusion through the registry against the libraries themselves."""
    from captum.attr import IntegratedGradients, Occlusion
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cfg = config(tmp_path, {"integrated-gradients": {"baseline": "mean", "internal_batch_size": 8}})
    m = embedded["vit"]
    model = loaded(m, "vit")
    x = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    store = RelevanceStore(None)
    get = lambda name: store.get(spec_of(cfg, name, model), model, image(), image_input(x[0]), 4).values  # noqa: E731

    direct = GradCAM(model=m, target_layers=[m.blocks[-1].norm1],
                     reshape_transform=lambda t: t[:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2))
    try:
        direct.get_target_width_height = lambda _input: (7, 7)
        expected = direct(input_tensor=x, targets=[ClassifierOutputTarget(4)])[0]
    finally:
        direct.activations_and_grads.release()
    m.zero_grad(set_to_none=True)
    np.testing.assert_allclose(get("grad-cam"), expected, atol=1e-6)
    means = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    ig = IntegratedGradients(m).attribute(x, baselines=means, target=4, n_steps=16, internal_batch_size=8)
    np.testing.assert_allclose(get("integrated-gradients"), ig.abs().sum(1)[0].double().numpy(), rtol=1e-6, atol=1e-9)
    occ = Occlusion(m).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), baselines=means, target=4)
    np.testing.assert_allclose(get("occlusion"), occ.mean(1)[0].double().numpy(), atol=1e-6)
    assert_clean(m)


def test_seeded_methods_repeat_and_follow_their_seed(tmp_path, embedded):
    model = loaded(embedded["vit"], "vit")
    x = torch.randn(3, 28, 28, generator=torch.Generator().manual_seed(1))
    rng = torch.get_rng_state()
    for name in ("smoothgrad", "kernel-shap"):
        a = RelevanceStore(None).get(spec_of(config(tmp_path), name, model), model, image(), image_input(x), 2).values
        b = RelevanceStore(None).get(spec_of(config(tmp_path), name, model), model, image(), image_input(x), 2).values
        c = RelevanceStore(None).get(spec_of(config(tmp_path, {name: {"seed": 9}}), name, model), model, image(),
                                     image_input(x), 2).values
        assert np.array_equal(a, b) and not np.array_equal(a, c), name
    assert torch.equal(torch.get_rng_state(), rng)


def test_kernel_shap_superpixels(tmp_path, embedded):
    cfg = config(tmp_path, {"kernel-shap": {"features": "superpixel", "superpixels": 8, "compactness": 100.0,
                                            "n_samples": 40}})
    model = loaded(embedded["vit"], "vit")
    inputs = image_input(torch.randn(3, 28, 28, generator=torch.Generator().manual_seed(2)))
    result = RelevanceStore(None).get(spec_of(cfg, "kernel-shap", model), model, image(), inputs, 1)
    segments = slic_segments(inputs.view, 8, 100.0)
    assert result.meta["features"] == len(np.unique(segments)) >= 2
    for label in np.unique(segments):  # one value per superpixel
        assert np.ptp(result.values[segments == label]) == 0
    direct = attribution.kernel_shap(embedded["vit"], inputs.x[None], [1], n_samples=40, segments=segments,
                                     perturbations_per_eval=model.batch_size("auto"))
    assert np.array_equal(result.values, direct[0])


@pytest.mark.parametrize("name", LIBRARY_METHODS)
def test_nothing_is_left_on_the_model_after_a_failing_map(tmp_path, embedded, name):
    """A 32×32 input fails inside the library call (timm's patch embedding asserts its size)."""
    m = embedded["vit"]
    before = snapshot(m)
    model = loaded(m, "vit")
    with pytest.raises(Exception):
        RelevanceStore(None).get(spec_of(config(tmp_path), name, model), model, image(),
                                 image_input(torch.zeros(3, 32, 32)), 0)
    assert_clean(m, before)


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_lrp_reports_what_it_conserves(tmp_path, embedded, family):
    model = loaded(embedded[family], family)
    x = torch.randn(3, 28, 28, generator=torch.Generator().manual_seed(4))
    result = RelevanceStore(None).get(spec_of(config(tmp_path), "lrp", model), model, image(), image_input(x), 5)
    meta = result.meta
    with torch.no_grad():
        logit = float(embedded[family](x[None])[0, 5])
    assert abs(meta["logit"] - logit) < 1e-4
    assert abs(result.values.sum() - meta["input_relevance"]) < 1e-4 * max(1.0, abs(logit))
    assert abs(meta["input_relevance"] + meta["source_relevance"] - logit) <= 1e-3 * max(1.0, abs(logit))
    assert meta["residual"] < 1e-3


# ----------------------------------------------------------------------------- the comparison


def region_predict(batch: torch.Tensor) -> torch.Tensor:
    """Class 1's probability rises with the brightness of rows 0–7, cols 8–15 of a 16×16 image."""
    score = batch[:, :, 0:8, 8:16].mean(dim=(1, 2, 3)) * 6.0
    return torch.stack([torch.zeros_like(score), score], dim=1).softmax(-1)


def test_batched_curves_equal_the_reference_and_share_their_end_points():
    torch.manual_seed(0)
    x = torch.rand(3, 16, 16) + 0.5
    dele, ins = torch.zeros(3, 16, 16), torch.full((3, 16, 16), 0.2)
    orders = [np.random.default_rng(s).permutation(16) for s in range(4)]
    rows = []

    def counting(batch):
        rows.append(batch.shape[0])
        return region_predict(batch)

    curves = faithfulness_curves(counting, x, dele, ins, orders, (4, 4), 1, step=3, batch_size=7)
    for o, order in enumerate(orders):
        f, d = perturbation_curve(region_predict, x, dele, np.zeros((4, 4)), 1, "deletion", 3, 7, order=order)
        _, i = perturbation_curve(region_predict, x, ins, np.zeros((4, 4)), 1, "insertion", 3, 7, order=order)
        np.testing.assert_allclose(curves.fractions, f)
        np.testing.assert_allclose(curves.deletion[o], d, atol=1e-7)
        np.testing.assert_allclose(curves.insertion[o], i, atol=1e-7)
    interior = len(range(0, 16, 3)) + 1 - 2
    assert sum(rows) == curves.forwards == 3 + 2 * interior * len(orders)  # the ends once, not per order
    assert all(r == 7 for r in rows[1:-1])  # full batches in between


def test_road_equals_grad_cams_metric_called_directly(embedded):
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    m = embedded["vit"]
    x = torch.randn(3, 28, 28, generator=torch.Generator().manual_seed(6))
    grid_map = np.random.default_rng(0).random((7, 7))
    grid_map[0] = 0.0  # ties: the pixel order breaks them by position
    order_map = pixel_order_map(grid_map, (28, 28))
    assert order_map.shape == (28, 28) and order_map.max() == 1 and order_map.min() == 0
    assert len(np.unique(order_map)) == 28 * 28

    def predict(batch):
        with torch.no_grad():
            return m(batch).softmax(-1)

    ours = road_scores(predict, x, [order_map, 1 - order_map], 2, [20, 80], seed=3, batch_size=5)
    for j, cams in enumerate([order_map, 1 - order_map]):
        for kind, metric in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
            for k, p in enumerate([20, 80]):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(3)
                    direct = metric(p)(x[None], cams[None], [ClassifierOutputSoftmaxTarget(2)], m)
                assert abs(ours[kind][j, k] - float(direct[0])) < 1e-6, (j, kind, p)
    np.testing.assert_allclose(ours["combined"], (ours["lerf"].mean(1) - ours["morf"].mean(1)) / 2)
    assert ours["forwards"] == 2 * 2 * 2 + 1


def test_bootstrap_intervals_on_known_inputs():
    values = np.array([[0.0, 5.0, 2.0], [1.0, 5.0, 3.0]])
    low, high = bootstrap_intervals(values, level=0.95, samples=4000, seed=0)
    assert low[1] == high[1] == 5.0  # a constant column
    assert low[0] == 0.0 and high[0] == 1.0  # two images: every resample mean lies in [0, 1], both ends drawn
    np.testing.assert_allclose(low[2] - low[0], 2.0)  # paired: the same draws shift with the column
    np.testing.assert_allclose(high[2] - high[0], 2.0)
    again = bootstrap_intervals(values, level=0.95, samples=4000, seed=0)
    assert np.array_equal(again[0], low) and np.array_equal(again[1], high)
    one = bootstrap_intervals(np.array([[0.3, 0.7]]))
    assert np.array_equal(one[0], [0.3, 0.7]) and np.array_equal(one[1], [0.3, 0.7])
    rng = np.random.default_rng(1)
    big = rng.normal(2.0, 1.0, size=(400, 1))
    low, high = bootstrap_intervals(big, samples=2000, seed=1)
    se = big.std() / np.sqrt(400)
    assert abs((high - low)[0] - 2 * 1.96 * se) < 0.2 * 2 * 1.96 * se
    with pytest.raises(ValueError):
        bootstrap_intervals(np.zeros(3))


def test_rank_first_counts_on_known_inputs():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.8], [0.3, 0.6, 0.1]])
    assert rank_first_counts(scores).tolist() == [1, 2, 1]  # the tie on row 1 counts for both
    assert rank_first_counts(scores, higher_is_better=False).tolist() == [1, 1, 1]
    eligible = np.array([[False, True, True]] * 3)
    assert rank_first_counts(scores, eligible=eligible).tolist() == [0, 2, 2]


def test_one_number_format_never_prints_minus_zero_and_separates_close_values():
    assert format_number(-0.0) == "0.000" and format_number(-0.0004) == "0.000"
    assert format_number(-0.0004, 4) == "-0.0004" and format_number(0.12345, 2) == "0.12"
    assert format_number(float("nan")) == "n/a" and format_number(None) == "n/a"
    assert decimals_to_separate([0.12341, 0.12344, 0.5]) == 5
    assert decimals_to_separate([0.1234, 0.1236, 0.5]) == 3
    assert decimals_to_separate([0.25, 0.5]) == 3
    assert decimals_to_separate([0.4, 0.4]) == 3
    assert decimals_to_separate([1e-9, 2e-9]) == 3  # equal at the 6-decimal cap: not told apart
    close = [0.71234, 0.71236]
    d = decimals_to_separate(close)
    assert len({format_number(v, d) for v in close}) == 2


def faithfulness_record(model: str, rows: list[dict]) -> SimpleNamespace:
    full = []
    for row in rows:
        full.append({"id": row["method"], "deletion_auc": row["deletion"], "insertion_auc": row["insertion"],
                     "score": row["insertion"] - row["deletion"], "road": row.get("road", 0.0),
                     "road_morf": 0.0, "road_lerf": 0.0, "randomisation_correlation": row.get("rho", 0.1),
                     "flagged": abs(row.get("rho", 0.1)) >= 0.5, **row})
    meta = {"model_display": model, "rows": full, "random": {"deletion": {"mean": 0.5, "std": 0.1},
                                                              "insertion": {"mean": 0.5, "std": 0.1}},
            "flag_correlation": 0.5, "road_percentiles": [20, 50, 80], "interval": 0.95, "bootstrap_samples": 500,
            "bootstrap_seed": 0, "notes": []}
    return SimpleNamespace(meta=meta, model=model)


def test_chapter_ranks_with_intervals_and_marks_a_flagged_leader():
    from generator.sections.faithfulness import FaithfulnessSection

    results = [faithfulness_record("ViT", [
        {"method": "A", "deletion": 0.1, "insertion": 0.9, "rho": -0.8, "road": 0.3},  # best, but flagged (ρ < 0)
        {"method": "B", "deletion": 0.2, "insertion": 0.7001, "road": 0.2},
        {"method": "C", "deletion": 0.2, "insertion": 0.7002, "road": 0.1}]) for _ in range(3)]
    extras = FaithfulnessSection.chapter_extras(None, results)
    table = extras["summary"]["ViT"]
    assert table["Method"].tolist()[:3] == ["A ⚠ sanity flag on 3/3", "C", "B"]
    assert table["Method"].tolist()[-1] == "random order"
    assert table["First (ins − del)"].tolist()[:3] == ["3/3", "0/3", "0/3"]
    assert table["First (ROAD)"].tolist()[:3] == ["3/3", "0/3", "0/3"]
    assert extras["decimals"] == 4 and table["Insertion − deletion ↑"][1].startswith("0.5002 [0.5002, 0.5002]")
    assert extras["flag_correlation"] == "0.50"
    text = table.to_string()
    assert "-0.0" not in text.replace("−", "")
