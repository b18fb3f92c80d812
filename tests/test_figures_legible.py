"""Every figure type, at the sizes the gallery draws (the embedded 28×28 models and the ImageNet
ViT-B/16, Swin-B and Swin-T), read at the content column's width: every text element at least
9 CSS pixels, no two text elements on top of each other, colour bars labelled, and the numbers
behind the figure attached for download."""

from __future__ import annotations

import numpy as np
import pytest

from generator.render import style
from generator.config.settings import RunConfig
from generator.render.finetune import probe_figure
from generator.render.heads import head_grid_figure
from generator.render.lime import lime_figure
from generator.render.metrics import curves_figure
from generator.render.perturb import variant_figure
from generator.render.rollout import fusion_figure, gradient_figure, progression_figure
from generator.render.swin import swin_rollout_figure, window_map_figure
from generator.render.tokens import norm_maps_figure, shares_figure

DPI = RunConfig().dpi  # the gallery's default
RNG = np.random.default_rng(0)
LONG = "worm fence, snake fence, snake-rail fence, Virginia fence"


def view(size):
    return RNG.integers(0, 255, size=(size, size, 3), dtype=np.uint8)


def heads(blocks, n, grid, size):
    return head_grid_figure(RNG.random((blocks, n, grid, grid)), view(size), title="ViT-B/16: attention per block and head",
                            query_label="the CLS token")


def window_maps(heads_, grid, window, shift, size, raw):
    labels = [f"head {h}" for h in range(heads_)] + ["mean of heads"]
    windows = (grid // window) ** 2
    queries = np.array([[r * window + window // 2, c * window + window // 2]
                        for r in range(grid // window) for c in range(grid // window)])[:windows]
    return window_map_figure(view(size), RNG.random((heads_ + 1, grid, grid)), queries,
                             {"grid": [grid, grid], "window": [window, window], "shift": [shift, shift]}, labels, raw,
                             "Swin-B: stage 1, block 2 (shifted windows)")


def lime(size, empty_second=True, tiny=True):
    segments = (np.arange(size * size).reshape(size, size) // (size * size // 12)).astype(np.int32)
    support = segments < 3
    weights = (segments - 5.5) * (1e-5 if tiny else 0.1)
    panels = [{"mask": support, "title": f"for {LONG.split(',')[0]} (12.3%)", "support": True},
              {"mask": np.zeros_like(support) if empty_second else ~support, "title": "for Border collie (3.3%)",
               "support": True, "empty": "no region supports Border collie"}]
    heat = [{"weights": weights, "title": "weights: worm fence"}, {"weights": -np.abs(weights), "title": "weights: Border collie"}]
    return lime_figure(view(size), panels, "Swin-B: LIME regions", heat, segments=segments)


CASES = {
    "heads-fmnist": lambda: heads(6, 4, 7, 28),
    "heads-vit-b16": lambda: heads(12, 12, 14, 224),
    "rollout-fusion": lambda: fusion_figure(view(224), RNG.random((1, 3, 14, 14)), ["mean", "max", "min"], [0.9],
                                            "ViT-B/16: rollout by head fusion"),
    "rollout-fusion-2-ratios": lambda: fusion_figure(view(28), RNG.random((2, 3, 7, 7)), ["mean", "max", "min"], [0.0, 0.9],
                                                     "ViT-FMNIST: rollout by head fusion"),
    "rollout-progression-fmnist": lambda: progression_figure(view(28), RNG.random((5, 7, 7)), [1, 2, 3, 4, 5],
                                                             "ViT-FMNIST: rollout block by block"),
    "rollout-progression-vit-b16": lambda: progression_figure(view(224), RNG.random((11, 14, 14)), list(range(1, 12)),
                                                              "ViT-B/16: rollout block by block"),
    "rollout-gradient": lambda: gradient_figure(view(224), RNG.random((14, 14)), RNG.random((14, 14)), LONG,
                                                "ViT-B/16: plain vs gradient-weighted rollout"),
    "swin-fmnist-overlay": lambda: window_maps(2, 14, 7, 3, 28, raw=False),
    "swin-fmnist-raw": lambda: window_maps(4, 7, 7, 0, 28, raw=True),
    "swin-b-stage1": lambda: window_maps(4, 56, 7, 3, 224, raw=False),
    "swin-b-stage3-raw": lambda: window_maps(16, 14, 7, 0, 224, raw=True),
    "swin-rollout-2-stages": lambda: swin_rollout_figure(view(28), RNG.random((14, 14)), RNG.random((2, 14, 14)),
                                                         "Swin-FMNIST: rollout through windows and merging"),
    "swin-rollout-4-stages": lambda: swin_rollout_figure(view(224), RNG.random((56, 56)), RNG.random((4, 56, 56)),
                                                         "Swin-B: rollout through windows and merging"),
    "lime-imagenet": lambda: lime(224),
    "lime-fmnist": lambda: lime(28, empty_second=False, tiny=False),
    "perturb": lambda: variant_figure([view(96)] * 4, [view(64)] * 4,
                                      ["Original", "Location test", "Size test (half)", "Split in two"],
                                      np.array([0.9, 0.2, 0.5, 0.001]), "Ankle boot", "ViT-FMNIST: edits and P(Ankle boot)",
                                      input_box=[16, 0, 80, 96], outside=[None, 0.44, 0.0, 0.09]),
    "probe-10-classes": lambda: probe_figure([{"epoch": e, "train_loss": 1 / e, "val_accuracy": 0.5 + e / 30} for e in range(1, 11)],
                                             RNG.integers(0, 20, (10, 10)), [f"class {i}" for i in range(10)],
                                             "ViT-FMNIST on digits: test accuracy 91.20%"),
    "probe-40-classes": lambda: probe_figure([{"epoch": e, "train_loss": 1 / e, "val_accuracy": 0.5} for e in range(1, 4)],
                                             RNG.integers(0, 5, (40, 40)), [str(i) for i in range(40)], "Swin on faces"),
    "tokens-norm-maps-fmnist": lambda: norm_maps_figure(view(28), 3 * RNG.random((2, 7, 7)), RNG.random((2, 7, 7)) > 0.9,
                                                        first_block=4, factor=4.0,
                                                        title="ViT-FMNIST: output-token norms of the last blocks"),
    "tokens-norm-maps-dinov2": lambda: norm_maps_figure(view(224), 6 * RNG.random((4, 16, 16)),
                                                        RNG.random((4, 16, 16)) > 0.97, first_block=8, factor=4.0,
                                                        title="DINOv2-S/14 with registers: output-token norms"),
    "tokens-shares": lambda: shares_figure({"outliers": {"the class token": [None, *RNG.random(11) / 5],
                                                         "the mean patch query": [None, *RNG.random(11) / 10]},
                                            "registers": {"the class token": list(RNG.random(12) / 2),
                                                          "the mean patch query": list(RNG.random(12) / 3)}},
                                           uniform=4 / 261, title="DINOv2-S/14 with registers: attention on outliers "
                                                                  "and registers"),
    "faithfulness": lambda: curves_figure(np.linspace(0, 1, 50), RNG.random((6, 2, 50)),
                                          ["rollout (mean)", "rollout (max)", "rollout (min)", "gradient rollout",
                                           "last-block CLS attention", "LIME"],
                                          {"deletion": {"mean": 0.0071234, "std": 0.0002},
                                           "insertion": {"mean": 0.0073, "std": 0.001}}, "ViT-B/16: deletion and insertion"),
}


def _overlaps(fig):
    """Pairs of text elements whose boxes overlap by more than 15 % of the smaller one."""
    renderer = style._renderer(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in style.visible_texts(fig)]
    found = []
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            w = min(a.x1, b.x1) - max(a.x0, b.x0)
            h = min(a.y1, b.y1) - max(a.y0, b.y0)
            if w > 0 and h > 0 and w * h > 0.15 * min(a.width * a.height, b.width * b.height):
                found.append((ta, tb))
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_text_is_legible_at_the_column_width(name, record_property):
    fig = CASES[name]()
    style.make_legible(fig, DPI)
    sizes = style.text_sizes(fig, DPI)
    smallest = min(px for _, px in sizes)
    record_property("min_text_px", round(smallest, 2))
    print(f"{name}: {len(sizes)} texts, smallest {smallest:.2f} px at {style.DISPLAY_WIDTH_PX} px, "
          f"saved width {style.saved_width_inches(fig):.2f} in")
    assert smallest >= style.MIN_TEXT_PX - 1e-6, [(t, round(px, 2)) for t, px in sizes if px < style.MIN_TEXT_PX]
    assert not _overlaps(fig), _overlaps(fig)
    # what the PNG really is: its width matches the measured box
    from PIL import Image
    import io

    png = Image.open(io.BytesIO(style.figure_bytes(fig, "png", DPI)))
    assert abs(png.width - style.saved_width_inches(fig) * DPI) <= 0.01 * png.width
    # colour bars say what they measure
    for ax in fig.findobj(lambda a: hasattr(a, "_colorbar")):
        assert ax.get_ylabel() or ax.get_xlabel() or name.startswith("heads"), f"unlabelled colour bar in {name}: {ax}"
    assert getattr(fig, "_vit_gallery_data", None), f"{name} carries no data"


def test_no_negative_zero_and_plurals():
    from generator.render.text import distinct_digits, fmt_column, fmt_number, plural

    assert fmt_number(-0.0001, 2) == "-0.00010"
    assert fmt_number(-1e-8) == "-1.00e-08" and fmt_number(-1e-14) == "0"
    assert fmt_number(-0.0) == "0"
    assert fmt_column([0.00712, 0.00714, 0.0071]) == ["0.00712", "0.00714", "0.00710"]
    assert len(set(fmt_column([0.0071234, 0.0071235, 0.0071236]))) == 3
    assert distinct_digits([1.0, 1.0]) == 3
    assert plural(1, "window") == "1 window" and plural(0, "window") == "0 windows"


def test_overlay_has_no_half_pixel_strip():
    """A constant-zero map over a black image: no coloured strip on any edge of the saved PNG."""
    import io

    from PIL import Image

    from generator.render.overlay import draw_overlay

    fig = style.new_figure(2, 2)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_overlay(ax, np.full((28, 28, 3), 255, np.uint8), np.zeros((7, 7)), alpha=0.5)
    png = np.asarray(Image.open(io.BytesIO(style.figure_bytes(fig, "png", 100))).convert("RGB")).astype(int)
    inner = png[10:-10, 10:-10]
    colour = inner.reshape(-1, 3)[0]
    assert (np.abs(inner - colour) <= 2).all()
    for edge in (png[10:-10, -3:], png[-3:, 10:-10]):  # right and bottom edges, inside the padding
        strip = edge[(np.abs(edge - 255).sum(-1) > 6)]  # not the white padding
        assert (np.abs(strip - colour) <= 2).all(), "a strip of another colour along the edge"


@pytest.mark.parametrize("name", ["faithfulness", "heads-fmnist", "lime-fmnist", "swin-rollout-2-stages"])
def test_one_layout_saves_what_savefig_tight_saves(name):
    """save_figure lays a figure out once and draws the PNG into the measured box: the PNG is byte
    for byte what ``savefig(bbox_inches="tight")`` writes after make_legible, and the PDF that
    follows it (measured by savefig) has the same page."""
    import re

    global RNG
    RNG = np.random.default_rng(11)
    reference = CASES[name]()
    RNG = np.random.default_rng(11)
    fig = CASES[name]()
    style.make_legible(reference, DPI)
    box = style._legible_box(fig, DPI)
    assert style.figure_bytes(fig, "png", DPI, box) == style.figure_bytes(reference, "png", DPI)
    sizes = [np.array(re.search(rb"/MediaBox \[ 0 0 ([0-9.]+) ([0-9.]+) \]",
                                style.figure_bytes(f, "pdf", DPI)).groups(), dtype=float) for f in (fig, reference)]
    assert np.abs(sizes[0] - sizes[1]).max() <= 0.5, sizes
