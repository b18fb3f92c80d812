"""``make bench``: speed and memory as ratios against baselines measured side by side.

Every row times the project's way and its baseline in the same process, alternating, over
``repeats`` runs after a warm-up, and reports medians with min and max. Results go to
``bench/results.json``. Benchmarks are not tests: nothing here asserts a goal; each row says
whether its goal was met, and where it was not, the largest remaining cost from a profile.
"""

from __future__ import annotations

import cProfile
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

_VIT28, _SWIN28 = "vit_fmnist_patch4_28", "swin_fmnist_patch2_28"
_EMBEDDED_VIT_WEIGHTS = f"file:{ROOT}/generator/models/weights/{_VIT28}.safetensors"


@dataclass(frozen=True)
class Scale:
    """How much work each benchmark group does; every group reads its sizes from here.

    ``FULL`` gives the numbers in bench/README.md, ``QUICK`` the same rows on tiny models, ``SMOKE``
    the smallest work that still runs every code path of every group (the embedded 28 px models,
    one timed repeat, a handful of images and samples): the test suite runs it to check that the
    bench works and writes valid rows. Smoke numbers are not measurements.
    """

    name: str
    #: timed repeats of every row; None: the ``--repeats`` option
    repeats: int | None
    #: (ViT arch, Swin arch, batch)
    capture: tuple[tuple[str, str, int], ...]
    #: one model per further family and token layout: (arch, create_model kwargs, batch); full: the
    #: architecture as timm defines it, at its default input size
    family_capture: tuple[tuple[str, dict, int], ...]
    #: (arch, LIME samples)
    lime: tuple[tuple[str, int], ...]
    #: (arch, images, batch sizes); timed repeats (None: ``repeats``)
    batch_sizes: tuple[tuple[str, int, tuple[int, ...]], ...]
    batch_repeats: int | None
    #: (arch, pixels); the two amounts of work per kind ("lime": samples, "probe": images)
    memory_model: tuple[str, int]
    memory_work: tuple[tuple[str, tuple[int, int]], ...]
    #: side of the generated large images, px; the sections their builds turn off (the heads section stays on)
    large_side: int
    large_off: tuple[str, ...]
    #: (train, val, test) items of the digits probe (None: all); probe epochs; plain-loop repeats (None: ``repeats``)
    probe_split: tuple[int, int, int] | None
    probe_epochs: int
    probe_plain_repeats: int | None
    #: text edits to gallery.toml, its sections turned off, and (section, "key = value") lines set, for every
    #: built gallery
    gallery_edits: tuple[tuple[str, str], ...]
    gallery_off: tuple[str, ...]
    gallery_set: tuple[tuple[str, str], ...]
    #: incremental: images, and cold/warm/changed rounds (None: ``repeats``)
    incremental_images: int
    incremental_repeats: int | None
    scaling_images: tuple[int, ...]
    #: the default gallery's images for the statistics comparison (a glob in images/fashion; None: all);
    #: its rounds (None: at most 3 of ``repeats``)
    stats_images: str | None
    stats_repeats: int | None
    #: matmul side; models timed against their FLOPs
    floor_n: int
    floor_models: tuple[str, ...]
    #: (arch, weights, (fewest, most) repeats, method settings)
    methods: tuple[tuple[str, str, tuple[int, int | None], dict], ...]
    #: (arch, grid, step, orders)
    faithfulness: tuple[tuple[str, int, int, int], ...]
    #: extra config text of the executor and dataset-mode galleries (the embedded models)
    embedded_extra: str
    #: Dask vs local: images, LIME samples, rounds (None: ``max(2, repeats // 2)``); workers vs threads:
    #: images, LIME samples
    executor_images: int
    executor_lime_samples: int
    executor_repeats: int | None
    executor_heavy_images: int
    executor_heavy_samples: int
    #: dataset mode: image counts, the warm-up's count, the figures sample
    dataset_images: tuple[int, ...]
    dataset_warmup: int
    dataset_sample: int
    #: Dask workers as processes (a real cluster's layout) or as threads of this process (smoke: the
    #: executor's own path, client, tasks, worker plugin, is the same; no process imports torch again).
    executor_processes: bool = True
    #: executors: build once untimed before timing (worker imports, model loads); smoke runs time cold builds
    executor_warmup: bool = True


#: The families beyond the embedded ViT and Swin, each with its token layout or attention form.
_FAMILY_ARCHS = ("deit_small_distilled_patch16_224", "vit_small_patch14_reg4_dinov2", "vit_base_patch16_siglip_224",
                 "vit_base_patch16_clip_224", "eva02_tiny_patch14_224", "beit_base_patch16_224", "swinv2_tiny_window8_256")
#: The same architectures made tiny (2 blocks, narrow, 32 px) for the quick and smoke runs.
_TINY_FAMILY = {
    "swinv2_tiny_window8_256": dict(img_size=32, embed_dim=16, depths=(2, 1), num_heads=(1, 2), window_size=4),
    "vit_small_patch14_reg4_dinov2": dict(img_size=28, depth=2, embed_dim=32, num_heads=2),
    "eva02_tiny_patch14_224": dict(img_size=28, depth=2, embed_dim=32, num_heads=2),
}


def _tiny_families(batch: int) -> tuple[tuple[str, dict, int], ...]:
    plain = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
    return tuple((arch, _TINY_FAMILY.get(arch, plain), batch) for arch in _FAMILY_ARCHS)


_QUICK_GALLERY = dict(gallery_edits=(("num_samples = 1000", "num_samples = 100"), ("epochs = 10", "epochs = 2")),
                      gallery_off=("probe", "faithfulness"), gallery_set=())
_LARGE_OFF = ("rollout", "swin", "lime", "perturb", "probe", "faithfulness")

FULL = Scale(
    name="full", repeats=None,
    capture=(("vit_base_patch16_224", "swin_base_patch4_window7_224", 8),),
    family_capture=tuple((arch, {}, 2 if "dinov2" in arch else 8) for arch in _FAMILY_ARCHS),  # DINOv2: 518 px
    lime=((_VIT28, 1000), ("vit_base_patch16_224", 100)),
    batch_sizes=((_VIT28, 2048, (8, 10, 16, 32, 64, 128, 256, 512)), (_SWIN28, 1024, (8, 10, 16, 32, 64, 128, 256, 512)),
                 ("vit_base_patch16_224", 64, (1, 2, 4, 8, 10, 16, 32, 64)),
                 ("swin_base_patch4_window7_224", 64, (1, 2, 4, 8, 10, 16, 32, 64))),
    batch_repeats=None,
    # at 224 px the inputs are big enough that holding them all would show (vit_tiny: ~100 images/s here)
    memory_model=("vit_tiny_patch16_224", 224), memory_work=(("lime", (500, 4000)), ("probe", (1000, 8000))),
    large_side=9000, large_off=_LARGE_OFF,
    probe_split=None, probe_epochs=10, probe_plain_repeats=None,
    gallery_edits=(), gallery_off=(), gallery_set=(),
    incremental_images=6, incremental_repeats=None,
    scaling_images=(1, 2, 4, 8),
    stats_images=None, stats_repeats=None,
    floor_n=2048, floor_models=(_VIT28, _SWIN28, "vit_base_patch16_224", "swin_base_patch4_window7_224"),
    # milliseconds per call on the embedded ViT: more repeats for a steady median
    methods=((_VIT28, _EMBEDDED_VIT_WEIGHTS, (21, None), {}),
             ("vit_base_patch16_224", "random:0", (1, 5),
              {"score-cam": {"enabled": False}, "integrated-gradients": {"n_steps": 16},
               "smoothgrad": {"nt_samples": 8}, "occlusion": {"window": [32, 32]}, "kernel-shap": {"n_samples": 64}})),
    faithfulness=((_VIT28, 7, 1, 21), ("vit_base_patch16_224", 14, 14, 8)),
    embedded_extra="",
    executor_images=8, executor_lime_samples=100, executor_repeats=None, executor_heavy_images=8,
    executor_heavy_samples=1000,
    dataset_images=(100, 400, 1000), dataset_warmup=5, dataset_sample=10,
)

QUICK = Scale(
    name="quick", repeats=None,
    capture=((_VIT28, _SWIN28, 8),),
    family_capture=_tiny_families(8),
    lime=((_VIT28, 200),),
    batch_sizes=((_VIT28, 512, (8, 10, 16, 32, 64, 128)),), batch_repeats=3,
    memory_model=(_VIT28, 28), memory_work=(("lime", (250, 2000)), ("probe", (500, 4000))),
    large_side=3000, large_off=_LARGE_OFF,
    probe_split=(200, 50, 50), probe_epochs=10, probe_plain_repeats=1,
    **_QUICK_GALLERY,
    incremental_images=2, incremental_repeats=1,
    scaling_images=(1, 2),
    stats_images="[0-2]-*.png", stats_repeats=1,
    floor_n=1024, floor_models=(_VIT28, _SWIN28),
    # the same rows on small work: the embedded ViT, and ViT-Ti/16 for the 224 px, 16 px patch layout
    methods=((_VIT28, _EMBEDDED_VIT_WEIGHTS, (1, 1),
              {"integrated-gradients": {"n_steps": 8}, "smoothgrad": {"nt_samples": 4}, "kernel-shap": {"n_samples": 40}}),
             ("vit_tiny_patch16_224", "random:0", (1, 1),
              {"score-cam": {"enabled": False}, "integrated-gradients": {"n_steps": 4}, "smoothgrad": {"nt_samples": 2},
               "occlusion": {"window": [112, 112]}, "kernel-shap": {"n_samples": 8}})),
    faithfulness=((_VIT28, 7, 1, 21),),
    embedded_extra="",
    executor_images=2, executor_lime_samples=100, executor_repeats=1, executor_heavy_images=4,
    executor_heavy_samples=200,
    dataset_images=(10, 20, 40), dataset_warmup=5, dataset_sample=10,
)

SMOKE = Scale(
    name="smoke", repeats=1,
    capture=((_VIT28, _SWIN28, 2),),
    family_capture=_tiny_families(2),
    lime=((_VIT28, 20),),
    batch_sizes=((_VIT28, 40, (8, 10)),), batch_repeats=None,  # 10: lime's default, compared to the best
    memory_model=(_VIT28, 28), memory_work=(("lime", (16, 32)), ("probe", (16, 32))),
    large_side=256, large_off=(*_LARGE_OFF, "maps", "stats"),
    probe_split=(20, 10, 10), probe_epochs=2, probe_plain_repeats=1,
    # builds check the bench's build paths (cache, run report, section timings), not the sections: heads and
    # statistics only (the statistics comparison needs its section), with the fewest bootstrap resamples
    gallery_edits=(), gallery_off=("rollout", "swin", "lime", "perturb", "maps", "probe", "faithfulness"),
    gallery_set=(("stats", "bootstrap_samples = 100"),),
    incremental_images=2, incremental_repeats=1,  # 2: the changed-image row changes 1 of them
    scaling_images=(1, 2),
    stats_images="0-*.png", stats_repeats=1,
    floor_n=128, floor_models=(_VIT28, _SWIN28),
    # every library method on the embedded ViT (default occlusion windows: its patches), fewest steps and samples
    methods=((_VIT28, _EMBEDDED_VIT_WEIGHTS, (1, 1),
              {"integrated-gradients": {"n_steps": 2}, "smoothgrad": {"nt_samples": 2}, "kernel-shap": {"n_samples": 8}}),),
    faithfulness=((_VIT28, 7, 1, 2),),
    embedded_extra="[sections.stats]\nbootstrap_samples = 100\n",
    executor_images=1, executor_lime_samples=20, executor_repeats=1, executor_heavy_images=1,  # 2 jobs: 1 per worker
    executor_heavy_samples=20, executor_processes=False, executor_warmup=False,
    dataset_images=(2, 4), dataset_warmup=1, dataset_sample=1,
)

SCALES = {scale.name: scale for scale in (FULL, QUICK, SMOKE)}


def _clamp(repeats: int, bounds: tuple[int, int | None]) -> int:
    low, high = bounds
    return max(low, repeats if high is None else min(repeats, high))


def timed(fn: Callable, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def alternate(fns: dict[str, Callable], repeats: int) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, interleaved, after one warm-up call of each, so that
    drift on the machine hits all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def side_by_side(ours: Callable, baseline: Callable, repeats: int) -> tuple[list[float], list[float]]:
    times = alternate({"ours": ours, "baseline": baseline}, repeats)
    return times["ours"], times["baseline"]


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def top_cost(fn: Callable, lines: int = 3) -> list[str]:
    """The functions with the largest cumulative time in one profiled call (for missed goals)."""
    profile = cProfile.Profile()
    profile.enable()
    fn()
    profile.disable()
    st = pstats.Stats(profile)
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # by self time: where it is spent
    out = []
    for (file, line, name), (_, _, tottime, cumtime, _) in rows:
        if "bench.py" in file or name.startswith("<"):
            continue
        out.append(f"{Path(file).name}:{line} {name} cum {cumtime:.3f}s self {tottime:.3f}s")
        if len(out) >= lines:
            break
    return out


def row(name: str, ours: list[float], base: list[float], goal: str, met: bool | None, **extra) -> dict:
    ratio = statistics.median(ours) / statistics.median(base)
    return {"name": name, "ours_s": stats(ours), "baseline_s": stats(base), "ratio": ratio, "goal": goal,
            "goal_met": met, **extra}


# --------------------------------------------------------------------------- rows


def bench_capture(scale: Scale, repeats: int) -> list[dict]:
    import timm

    from ..attention.capture import vit_attention
    from ..attention.windows import window_attention

    out = []
    for vit_arch, swin_arch, batch in scale.capture:
        for arch, capture in ((vit_arch, vit_attention), (swin_arch, lambda m, x: window_attention(m, x)[:2])):
            torch.manual_seed(0)
            model = timm.create_model(arch, pretrained=False).eval()
            size = model.pretrained_cfg["input_size"][-1]
            x = torch.randn(batch, 3, size, size)
            with torch.inference_mode():
                ours, base = side_by_side(lambda: capture(model, x), lambda: model(x), repeats)
            r = statistics.median(ours) / statistics.median(base)
            extra = {}
            if r > 1.25:
                with torch.inference_mode():
                    extra["largest_costs"] = top_cost(lambda: capture(model, x))
            out.append(row(f"attention capture: {arch}, batch {batch}", ours, base, "≤ 1.25× a plain forward", r <= 1.25,
                           **extra))
    for arch, kwargs, batch in scale.family_capture:
        out.append(_family_capture_row(arch, kwargs, batch, repeats))
    return out


def _family_capture_row(arch: str, kwargs: dict, batch: int, repeats: int) -> dict:
    """Capture through the model's family adapter ÷ a plain forward, at the model's input size."""
    import timm

    from ..families import family_of

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    family = family_of(model)
    size = kwargs.get("img_size") or model.pretrained_cfg["input_size"][-1]
    x = torch.randn(batch, 3, size, size)
    capture = (lambda: family.window_attention(model, x)[:2]) if "windows" in family.capabilities else (
        lambda: family.attention(model, x))
    with torch.inference_mode():
        ours, base = side_by_side(capture, lambda: model(x), repeats)
        r = statistics.median(ours) / statistics.median(base)
        extra = {"family": family.name, "input_px": size}
        if r > 1.25:
            extra["largest_costs"] = top_cost(capture)
    return row(f"attention capture: {arch}, batch {batch}", ours, base, "≤ 1.25× a plain forward", r <= 1.25, **extra)


def _lime_case(arch: str, pretrained: bool):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=pretrained).eval()
    size = model.pretrained_cfg["input_size"][-1]
    rng = np.random.default_rng(0)
    image = np.zeros((size, size, 3), np.uint8)
    image[size // 4 : 3 * size // 4, size // 5 : 4 * size // 5] = 200
    image = np.clip(image.astype(int) + rng.integers(0, 40, image.shape), 0, 255).astype(np.uint8)
    segmentation = {"kernel_size": 1, "max_dist": 4} if size < 64 else {}  # lime's defaults give 1 segment at 28 px
    return model, image, segmentation


def bench_lime(scale: Scale, repeats: int) -> list[dict]:
    from lime import lime_image
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    from ..relevance.lime import explain_image, predict_fn
    from ..models.loaded import auto_batch_size
    from ..models.loading import forward_flops

    out = []
    for arch, samples in scale.lime:
        model, image, seg = _lime_case(arch, pretrained=arch.endswith("_28"))
        size = image.shape[0]
        batch = auto_batch_size(forward_flops(model, (size, size)))  # what the gallery's "auto" picks
        images = np.repeat(image[None], samples, axis=0)
        classify = predict_fn(model, batch)

        def ours():
            return explain_image(model, image, num_samples=samples, batch_size=batch, segmentation_params=seg)

        def plain():
            segmenter = SegmentationAlgorithm("quickshift", random_seed=0,
                                              **{"kernel_size": 4, "max_dist": 200, "ratio": 0.2, **seg})
            return lime_image.LimeImageExplainer(random_state=0).explain_instance(
                image, predict_fn(model, 10), top_labels=2, num_samples=samples, num_features=5, random_seed=0,
                segmentation_fn=segmenter)

        times = alternate({"ours": ours, "forwards": lambda: classify(images), "plain": plain}, repeats)
        extra = {"num_samples": samples, "batch_size": batch}
        r = statistics.median(times["ours"]) / statistics.median(times["forwards"])
        if r > 1.10:
            extra["largest_costs"] = top_cost(ours)
        out.append(row(f"LIME vs its forward passes: {arch}", times["ours"], times["forwards"], "≤ 1.10×", r <= 1.10,
                       **extra))
        speedup = statistics.median(times["plain"]) / statistics.median(times["ours"])
        out.append(row(f"LIME vs plain lime_image (batch 10): {arch}", times["ours"], times["plain"],
                       "faster (report the speed-up)", speedup > 1, speedup=speedup, **extra))
    return out


def bench_batch_sizes(scale: Scale, repeats: int) -> dict:
    """Forward throughput of the LIME classifier function by batch size: the measurements behind
    ``models.auto_batch_size``, and how close its pick comes to the best."""
    import timm

    from ..relevance.lime import predict_fn
    from ..models.loaded import auto_batch_size
    from ..models.loading import forward_flops

    out = {}
    repeats = scale.batch_repeats or repeats
    for arch, count, batches in scale.batch_sizes:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        size = model.pretrained_cfg["input_size"][-1]
        images = np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        classifiers = {batch: predict_fn(model, batch) for batch in batches}
        times = alternate({batch: (lambda f=f: f(images)) for batch, f in classifiers.items()}, repeats)
        sizes = {b: {"images_per_s": count / statistics.median(t), "median_s": statistics.median(t)}
                 for b, t in times.items()}
        best = max(sizes, key=lambda b: sizes[b]["images_per_s"])
        flops = forward_flops(model, (size, size))
        auto = auto_batch_size(flops)
        auto_rate = count / statistics.median(timed(lambda: predict_fn(model, auto)(images), repeats))
        out[arch] = {"gflops_per_image": flops / 1e9, "by_batch": sizes, "best_batch": best, "auto_batch": auto,
                     "auto_vs_best": auto_rate / sizes[best]["images_per_s"],
                     "lime_default_10_vs_best": (sizes[10]["images_per_s"] / sizes[best]["images_per_s"]
                                                 if 10 in sizes else None)}
        print(f"batch sweep {arch}: best {best} ({sizes[best]['images_per_s']:.1f} img/s); auto {auto} at "
              f"{out[arch]['auto_vs_best']:.2f}× the best", flush=True)
    return out


_PEAK_CHILD = """
import json, resource, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
kind, size, workdir, arch = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
from generator.models import embedded  # noqa: F401  (registers the embedded models)
from generator.devtools import bench

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB → MiB
    raise KeyError(field)

def reset_peak():  # the high-water mark of this process from here on (Linux ≥ 4.0)
    Path("/proc/self/clear_refs").write_text("5")

if kind == "lime":
    from generator.relevance.lime import explain_image
    model, image, seg = bench._lime_case(arch, pretrained=arch.endswith("_28"))
    run = lambda n: explain_image(model, image, num_samples=n, segmentation_params=seg)  # batch "auto"
else:
    import timm
    from timm.data import create_transform, resolve_model_data_config
    from generator.analysis.probe import discover_dataset, extract_features, materialise_builtin
    from generator.models.loaded import auto_batch_size
    from generator.models.loading import forward_flops
    model = timm.create_model(arch, pretrained=arch.endswith("_28")).eval()
    size_px = model.pretrained_cfg["input_size"][-1]
    batch = auto_batch_size(forward_flops(model, (size_px, size_px)))
    splits = discover_dataset(materialise_builtin("sklearn:digits", workdir))
    items = splits.train + splits.val + splits.test
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    run = lambda n: extract_features(model, (items * (n // len(items) + 1))[:n], transform,
                                     workdir / f"features-{n}.npy", batch)
run(64)  # warm: first-forward allocations
ready = status("VmRSS")
reset_peak()
run(size)
print(json.dumps({"ready_mib": ready, "peak_mib": status("VmHWM")}))
"""


def bench_memory(scale: Scale, workdir: Path) -> dict:
    """Peak RSS of LIME and of probe feature extraction as the work grows 8×: streamed work stays flat.

    Each point is a fresh process; its peak is the kernel's high-water mark reset after the model is
    loaded and warm (``/proc/self/clear_refs``), so it is this work's alone (Linux only).
    """
    arch, pixels = scale.memory_model
    cases = dict(scale.memory_work)
    out = {"model": arch}
    for kind, sizes in cases.items():
        points = []
        for size in sizes:
            proc = subprocess.run([sys.executable, "-c", _PEAK_CHILD, kind, str(size), str(workdir / "memory"), arch],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
            point = json.loads(proc.stdout.strip().splitlines()[-1])
            # for scale: the inputs alone, had they been built all at once (uint8 images for LIME, float32 tensors for the probe)
            at_once = size * pixels * pixels * 3 * (1 if kind == "lime" else 4) / 2**20
            points.append({"work": size, **point, "growth_mib": point["peak_mib"] - point["ready_mib"],
                           "inputs_all_at_once_mib": at_once})
        unit = "samples" if kind == "lime" else "images"
        first, last = points[0], points[-1]
        per_item_kib = max(0.0, last["growth_mib"] - first["growth_mib"]) * 1024 / (last["work"] - first["work"])
        input_kib = pixels * pixels * 3 * (1 if kind == "lime" else 4) / 1024
        # streamed: what grows per extra item is far below one input (LIME keeps its (samples × classes)
        # predictions and (samples × superpixels) design for the ridge fit, as lime does; no images)
        out[kind] = {"unit": unit, "points": points, "growth_per_item_kib": per_item_kib,
                     "one_input_kib": input_kib, "bounded": per_item_kib < input_kib / 4}
        print(f"peak memory {kind} ({arch}): " + ", ".join(f"{p['work']} {unit} → {p['peak_mib']:.0f} MiB "
                                                            f"(+{p['growth_mib']:.0f} over loaded)" for p in points)
              + f"; {per_item_kib:.1f} KiB per extra item vs {input_kib:.0f} KiB per input", flush=True)
    return {"name": "peak memory of LIME and probe feature extraction", **out}


_CHILD_PEAK = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if proc.returncode != 0:
    sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # KiB → MiB, the build's own peak
"""


def bench_large_images(scale: Scale, workdir: Path) -> dict:
    """Peak RSS of a build over 1 and over 4 large images (9000×9000, under Pillow's bomb guard).

    Large images are decoded when needed and never all held at once, so the peak should not grow
    with their number (goal: 4 images ≤ 1.15× the peak of 1). Each point is one cold build in a
    fresh process tree (its peak is that build's alone), with the heads section on the embedded ViT.
    """
    from PIL import Image

    side = scale.large_side
    pattern = np.zeros((side, side, 3), np.uint8)
    pattern[::9] = 180
    points = []
    for count in (1, 4):
        folder = workdir / f"large-{count}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pattern[:, i] = 255  # distinct bytes per image
            Image.fromarray(pattern).save(folder / f"large{i}.png", compress_level=1)
        config = workdir / f"large-{count}.toml"
        config.write_text(
            f'title = "large"\nimages = "{folder}"\noutput = "{workdir / f"large-{count}-out"}"\n'
            f'site_dir = "{workdir / f"large-{count}-site"}"\n'
            f'[[models]]\nname = "ViT"\narch = "vit_fmnist_patch4_28"\n'
            f'weights = "file:{ROOT}/generator/models/weights/vit_fmnist_patch4_28.safetensors"\n'
            + "".join(f"[sections.{s}]\nenabled = false\n" for s in scale.large_off))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD_PEAK, sys.executable, "-m", "generator", "build",
                               "--config", str(config), "--quiet", "--no-site"], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"large-image build failed: {proc.stderr[-2000:]}")
        points.append({"images": count, "peak_mib": float(proc.stdout.strip().splitlines()[-1]),
                       "wall_s": time.perf_counter() - start})
    ratio = points[1]["peak_mib"] / points[0]["peak_mib"]
    one_image_mib = side * side * 3 / 2**20
    print(f"large images ({side}×{side}, {one_image_mib:.0f} MiB decoded each): peak RSS "
          + ", ".join(f"{p['images']} → {p['peak_mib']:.0f} MiB" for p in points) + f"; ratio {ratio:.2f}×", flush=True)
    return {"name": "peak memory of a build with large images", "side_px": side, "decoded_mib_each": one_image_mib,
            "points": points, "ratio_4_vs_1": ratio, "goal": "≤ 1.15×", "met": ratio <= 1.15}


def bench_probe(scale: Scale, repeats: int, workdir: Path) -> list[dict]:
    import timm
    from timm.data import create_transform, resolve_model_data_config

    from ..analysis.probe import (ProbeSettings, discover_dataset, extract_features, materialise_builtin, new_head,
                                  train_probe_on_features, train_probe_plain)

    torch.manual_seed(0)
    model = timm.create_model("vit_fmnist_patch4_28", pretrained=True).eval()
    root = materialise_builtin("sklearn:digits", workdir / "digits")
    splits = discover_dataset(root)
    if scale.probe_split is not None:
        n_train, n_val, n_test = scale.probe_split
        splits.train, splits.val, splits.test = splits.train[:n_train], splits.val[:n_val], splits.test[:n_test]
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    settings = ProbeSettings(epochs=scale.probe_epochs)
    items = splits.train + splits.val + splits.test
    n_train, n_val = len(splits.train), len(splits.val)

    def extraction():
        return extract_features(model, items, transform, workdir / "f.npy")

    def probe():
        feats = np.asarray(extraction())
        labels = np.array([y for _, y in items])
        parts = [(feats[:n_train], labels[:n_train]), (feats[n_train:n_train + n_val], labels[n_train:n_train + n_val]),
                 (feats[n_train + n_val:], labels[n_train + n_val:])]
        return train_probe_on_features(new_head(model, 10, 0).get_classifier(), *parts, settings)

    ours, base = side_by_side(probe, extraction, repeats)
    r = statistics.median(ours) / statistics.median(base)
    out = [row("probe (cached features) vs one feature-extraction pass", ours, base, "≤ 1.3×", r <= 1.3)]
    cached_result = probe()
    plain_times, plain_result = [], None
    for _ in range(scale.probe_plain_repeats or repeats):
        start = time.perf_counter()
        plain_result = train_probe_plain(new_head(model, 10, 0), splits, transform, settings)
        plain_times.append(time.perf_counter() - start)
    speedup = statistics.median(plain_times) / statistics.median(ours)
    out.append(row(f"probe (cached) vs the plain {settings.epochs}-epoch loop", ours, plain_times,
                   "≥ 5× faster, equal accuracy",
                   speedup >= 5 and abs(cached_result.test_accuracy - plain_result.test_accuracy) <= 0.005,
                   speedup=speedup, accuracy_cached=cached_result.test_accuracy,
                   accuracy_plain=plain_result.test_accuracy))
    return out


def _gallery(workdir: Path, images: int, name: str, scale: Scale) -> Path:
    folder = workdir / f"{name}-images"
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((ROOT / "images" / "fashion").glob("[0-9]-*.png"))
    for i in range(images):
        shutil.copy(sources[i % len(sources)], folder / f"img{i:02d}.png")
        if i >= len(sources):  # a distinct file: flip it
            from PIL import Image, ImageOps

            ImageOps.mirror(Image.open(folder / f"img{i:02d}.png")).save(folder / f"img{i:02d}.png")
    text = (ROOT / "gallery.toml").read_text()
    text = text.replace('images = "images/fashion"', f'images = "{folder}"')
    text = text.replace('output = "build"', f'output = "{workdir / name / "build"}"')
    text = text.replace('site_dir = "site"', f'site_dir = "{workdir / name / "site"}"')
    text = _scaled_gallery(text.replace("generator/models/weights/", f"{ROOT}/generator/models/weights/"), scale)
    config = workdir / f"{name}.toml"
    config.write_text(text)
    return config


def _scaled_gallery(text: str, scale: Scale) -> str:
    """gallery.toml's text with the scale's edits (fewer samples) and its sections turned off (the quick
    and smoke runs only check that the machinery works)."""
    for old, new in scale.gallery_edits:
        if old not in text:  # gallery.toml changed: the edit would silently do nothing
            raise ValueError(f"gallery.toml has no {old!r} to scale")
        text = text.replace(old, new)
    for section in scale.gallery_off:
        text = _section_line(text, section, "enabled = false")
    for section, line in scale.gallery_set:
        text = _section_line(text, section, line)
    return text


def _section_line(text: str, section: str, line: str) -> str:
    """gallery.toml's text with ``line`` first in ``[sections.<section>]`` (the table added at the end if absent)."""
    if f"[sections.{section}]\n" in text:
        return text.replace(f"[sections.{section}]\n", f"[sections.{section}]\n{line}\n")
    return text + f"\n[sections.{section}]\n{line}\n"


def _run_build(config: Path, *args: str) -> float:
    """Wall seconds of one `build` subprocess."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "generator", "build", "--config", str(config), "--quiet", "--no-site",
                           *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"build failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return wall


def bench_incremental(scale: Scale, repeats: int, workdir: Path) -> list[dict]:
    n = scale.incremental_images
    repeats = scale.incremental_repeats or repeats
    config = _gallery(workdir, n, "incremental", scale)
    cold, warm = [], []
    for _ in range(repeats):  # alternating: from scratch (no cache, no pages), then again
        shutil.rmtree(workdir / "incremental" / "build", ignore_errors=True)
        cold.append(_run_build(config))
        warm.append(_run_build(config))
    out = [row(f"warm rebuild vs cold ({n} images)", warm, cold, "≤ 5% of cold", statistics.median(warm) /
               statistics.median(cold) <= 0.05,
               note="whole `build` subprocesses: Python start-up, config, cache lookups, pages; the warm one "
                    "serves model identities from the memo and imports no torch")]
    # change one image out of n
    from PIL import Image

    folder = workdir / "incremental-images"
    one = folder / "img00.png"
    changed = []
    for k in range(repeats):
        array = np.asarray(Image.open(one)).copy()
        array[0, 0] = (int(array[0, 0]) + 1 + k) % 256
        Image.fromarray(array).save(one)
        changed.append(_run_build(config))
    out.append(row(f"rebuild after changing 1 of {n} images vs cold", changed, cold, f"≈ 1/{n} of cold",
                   statistics.median(changed) / statistics.median(cold) <= 1.5 / n + 0.1))
    return out


def bench_scaling(scale: Scale, workdir: Path) -> dict:
    points = []
    for n in scale.scaling_images:
        config = _gallery(workdir, n, f"scale{n}", scale)
        start = time.perf_counter()
        # a fresh wrapper per run, so RUSAGE_CHILDREN's peak is this build's alone
        wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "generator", "build", "--config",
                               str(config), "--quiet", "--no-site", "--no-cache"], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"build failed: {proc.stderr[-2000:]}")
        peak_kib = int(proc.stdout.strip().splitlines()[-1])
        report = json.loads((workdir / f"scale{n}" / "build" / "run_report.json").read_text())
        points.append({"images": n, "wall_s": wall, "peak_rss_mib": peak_kib / 1024,
                       "section_seconds": report["section_seconds"]})
    slopes = [(b["wall_s"] - a["wall_s"]) / (b["images"] - a["images"]) for a, b in zip(points, points[1:])]
    growth = {"seconds_per_image": slopes,
              "superlinear": bool(len(slopes) > 1 and slopes[-1] > 1.5 * max(slopes[0], 1e-9))}
    return {"name": "scaling: full default gallery", "points": points, "growth": growth,
            "note": "one cold build per point (8 images take ~90 s); the per-image slope is the figure. Peak RSS is "
                    "the build's, read through a small wrapper process so the bench's own memory is not inherited"}


_RUSAGE_CHILD = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def _default_gallery(workdir: Path, name: str, stats: bool, scale: Scale) -> Path:
    """The default gallery (gallery.toml, images/fashion) with its output under ``workdir``; the
    statistics section on or off. The scale may keep fewer images and skip probe and faithfulness."""
    images = ROOT / "images" / "fashion"
    if scale.stats_images is not None:
        folder = workdir / f"{name}-images"
        folder.mkdir(parents=True, exist_ok=True)
        for source in sorted(images.glob(scale.stats_images)):
            shutil.copy(source, folder / source.name)
        images = folder
    text = (ROOT / "gallery.toml").read_text()
    text = text.replace('images = "images/fashion"', f'images = "{images}"')
    text = text.replace('output = "build"', f'output = "{workdir / name / "build"}"')
    text = text.replace('site_dir = "site"', f'site_dir = "{workdir / name / "site"}"')
    text = _scaled_gallery(text.replace("generator/models/weights/", f"{ROOT}/generator/models/weights/"), scale)
    if not stats:
        text = _section_line(text, "stats", "enabled = false")
    config = workdir / f"{name}.toml"
    config.write_text(text)
    return config


def bench_stats_overhead(scale: Scale, repeats: int, workdir: Path, keep: Path | None = None) -> dict:
    """Cold builds of the default gallery with the attention-statistics section on and off, alternating.

    Each build is a fresh ``build --no-cache --no-site`` process under a small wrapper that reports
    its wall time and the CPU time (user + sys) of the whole child process tree
    (``RUSAGE_CHILDREN``): on a shared machine CPU time is the steadier measure. Goal: the
    section adds at most 10 %. ``keep``: copy the docs of the last build with statistics there
    (for reading its pages).
    """
    runs: dict[str, list[dict]] = {"on": [], "off": []}
    for _ in range(repeats):
        for mode in ("on", "off"):
            config = _default_gallery(workdir, f"stats-{mode}", mode == "on", scale)
            shutil.rmtree(workdir / f"stats-{mode}", ignore_errors=True)
            proc = subprocess.run([sys.executable, "-c", _RUSAGE_CHILD, sys.executable, "-m", "generator", "build",
                                   "--config", str(config), "--quiet", "--no-site", "--no-cache"],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"build ({mode}) failed: {proc.stderr[-2000:]}")
            point = json.loads(proc.stdout.strip().splitlines()[-1])
            report = json.loads((workdir / f"stats-{mode}" / "build" / "run_report.json").read_text())
            point["stats_section_s"] = report["section_seconds"].get("stats", 0.0)
            runs[mode].append(point)
            print(f"stats {mode}: wall {point['wall_s']:.1f}s cpu {point['cpu_s']:.1f}s "
                  f"(stats section {point['stats_section_s']:.1f}s)", flush=True)
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(workdir / "stats-on" / "build" / "docs", keep)
    med = {mode: {k: statistics.median(p[k] for p in runs[mode]) for k in ("wall_s", "cpu_s", "stats_section_s")}
           for mode in runs}
    cpu_ratio = med["on"]["cpu_s"] / med["off"]["cpu_s"]
    wall_ratio = med["on"]["wall_s"] / med["off"]["wall_s"]
    return {"name": "attention statistics: cold default build, section on vs off", "runs": runs, "median": med,
            "cpu_ratio": cpu_ratio, "wall_ratio": wall_ratio, "repeats": repeats,
            "stats_share_of_on_build": med["on"]["stats_section_s"] / med["on"]["wall_s"],
            "goal": "≤ 1.10× (CPU time)", "met": cpu_ratio <= 1.10,
            "note": "medians over alternating runs" if repeats > 1 else "one run each"}


def bench_floor(scale: Scale, repeats: int) -> dict:
    import timm

    from ..models.loading import forward_flops

    n = scale.floor_n
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = timed(lambda: a @ b, repeats)
    rate = 2 * n**3 / statistics.median(times)
    models = {}
    for arch in scale.floor_models:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        size = model.pretrained_cfg["input_size"][-1]
        x = torch.randn(8, 3, size, size)
        flops = 8 * forward_flops(model, (size, size))  # per image × 8: the counter is linear in the batch
        with torch.inference_mode():
            forward = timed(lambda: model(x), repeats)
        floor = flops / rate
        models[arch] = {"flops_batch8": flops, "floor_s": floor, "forward_s": stats(forward),
                        "forward_vs_floor": statistics.median(forward) / floor}
    return {"name": "floor: matmul rate and forward FLOPs", "matmul_gflops": rate / 1e9, "matmul_n": n,
            "models": models}


# --------------------------------------------------------------------------- explanation methods and faithfulness


def _methods_config(workdir: Path, methods: dict):
    from ..config.loading import parse_config

    (workdir / "methods-images").mkdir(parents=True, exist_ok=True)
    return parse_config({"title": "bench", "images": str(workdir / "methods-images"),
                         "output": str(workdir / "methods-out"), "site_dir": str(workdir / "methods-site"),
                         "models": [{"name": "m", "arch": "vit_fmnist_patch4_28", "weights": "random:0"}],
                         "methods": methods})


#: What a group of passes computes: forward only; the gradient of the target logit with respect to
#: the input; the same with timm's explicit attention path (the probabilities exist as tensors);
#: the gradient with respect to the CAM target layer's output (the backward pass stops there).
PASS_KINDS = ("forward", "input-gradient", "input-gradient-explicit-attention", "layer-gradient")


def _passes(module: torch.nn.Module, x: torch.Tensor, target: int, count: int, batch: int, kind: str) -> None:
    """``count`` copies of ``x`` (1, 3, H, W) through the model in batches of ``batch``, computing
    what ``kind`` (one of :data:`PASS_KINDS`) names and nothing more."""
    from ..attention.capture import unfused_attention
    from ..relevance.cam import cam_target_layer
    from ..relevance.common import gradients_only_for

    if kind not in PASS_KINDS:
        raise ValueError(f"unknown pass kind {kind!r}")
    layer = cam_target_layer(module) if kind == "layer-gradient" else None
    for start in range(0, count, batch):
        n = min(batch, count - start)
        if kind == "forward":  # a batch in memory, as a method's perturbed copies are (not a stride-0 view)
            with torch.inference_mode():
                module(x.expand(n, -1, -1, -1).clone())
        elif kind == "layer-gradient":  # as the CAMs run: the backward pass stops at the target layer
            outputs = []
            with gradients_only_for(module, layer):
                handle = layer.register_forward_hook(lambda _m, _args, out: outputs.append(out))
                try:
                    torch.autograd.grad(module(x.expand(n, -1, -1, -1).clone())[:, target].sum(), outputs)
                finally:
                    handle.remove()
        else:
            inp = x.expand(n, -1, -1, -1).clone().requires_grad_(True)
            if kind == "input-gradient":
                torch.autograd.grad(module(inp)[:, target].sum(), inp)
            else:
                with unfused_attention(module):
                    torch.autograd.grad(module(inp)[:, target].sum(), inp)


def bench_methods(scale: Scale, repeats: int, workdir: Path) -> list[dict]:
    """Each library method through the registry against the forward/backward passes it needs, alone.

    Embedded ViT (trained weights): every method with its default settings, at least 21 repeats. ViT-B/16
    (random weights, one 224 px image): at most 5 repeats and lighter settings (stated in each row's
    ``settings``), Score-CAM skipped (768 forward passes of ViT-B per map: ~1.5 min per repeat here).
    Quick: one repeat of light settings on the embedded ViT and on ViT-Ti/16 (random weights). Smoke:
    one repeat of the lightest settings on the embedded ViT.
    """
    from ..models.loaded import load_model
    from ..relevance.registry import RelevanceStore, map_specs
    from ..config.settings import ModelConfig

    out = []
    for arch, weights, bounds, methods in scale.methods:
        reps = _clamp(repeats, bounds)
        model = load_model(ModelConfig(name="bench", arch=arch, weights=weights))
        cfg = _methods_config(workdir, methods)
        size = model.input_size
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            target = int(model.module(x)[0].argmax())
        from ..data.inputs import ModelInput

        inputs = ModelInput(view=np.zeros((*size, 3), np.uint8), x=x[0])
        batch = model.batch_size("auto")
        image = type("Image", (), {"sha256": "bench", "slug": "bench"})()
        for spec in map_specs(cfg, model):  # every registered method that states its passes
            passes = spec.method.passes(model.module, batch, x)
            if passes is None:
                continue

            def ours(spec=spec):
                RelevanceStore(None).get(spec, model, image, inputs, target)

            def needed(passes=passes):
                for count, per, kind in passes:
                    _passes(model.module, x, target, count, per, kind)

            times = alternate({"ours": ours, "passes": needed}, reps)
            r = statistics.median(times["ours"]) / statistics.median(times["passes"])
            extra = {"passes": [{"count": c, "batch": b, "kind": k} for c, b, k in passes],
                     "settings": spec.method.settings.model_dump(), "repeats": reps}
            if r > 1.15:
                extra["largest_costs"] = top_cost(ours)
            out.append(row(f"{spec.method.label} vs its passes: {arch}", times["ours"], times["passes"], "≤ 1.15×",
                           r <= 1.15, **extra))
    return out


def bench_faithfulness_curves(scale: Scale, repeats: int) -> list[dict]:
    """The faithfulness curves of one image (every method's order plus random orders, deletion and insertion,
    shared end points once) against the forward passes of as many inputs in the same batches."""
    import timm

    from ..analysis.faithfulness import faithfulness_curves

    out = []
    for arch, grid, step, orders in scale.faithfulness:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        from ..models.loaded import auto_batch_size
        from ..models.loading import forward_flops

        size = model.pretrained_cfg["input_size"][-1]
        batch = auto_batch_size(forward_flops(model, (size, size)))
        x = torch.randn(3, size, size)
        base = torch.zeros_like(x)
        perms = [np.random.default_rng(s).permutation(grid * grid) for s in range(orders)]

        def predict(b):
            with torch.inference_mode():
                return model(b).softmax(-1)

        count = faithfulness_curves(predict, x, base, base, perms, (grid, grid), 0, step, batch).forwards
        xs = x[None].expand(batch, -1, -1, -1).clone()

        def forwards():
            predict(torch.stack([x, base, base]))
            for start in range(0, count - 3, batch):
                predict(xs[:min(batch, count - 3 - start)])

        reps = repeats if arch.endswith("_28") else max(1, min(repeats, 3))
        times = alternate({"ours": lambda: faithfulness_curves(predict, x, base, base, perms, (grid, grid), 0, step,
                                                               batch),
                           "forwards": forwards}, reps)
        r = statistics.median(times["ours"]) / statistics.median(times["forwards"])
        extra = {"forwards": count, "orders": orders, "grid": grid, "step": step, "batch_size": batch, "repeats": reps}
        if r > 1.15:
            extra["largest_costs"] = top_cost(lambda: faithfulness_curves(predict, x, base, base, perms, (grid, grid),
                                                                          0, step, batch))
        out.append(row(f"faithfulness curves vs their forward passes: {arch}", times["ours"], times["forwards"],
                       "≤ 1.15×", r <= 1.15, **extra))
    return out


# --------------------------------------------------------------------------- executors and dataset mode


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and every live child (Dask workers included)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _measured(fn: Callable) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU over this process and its live children."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


#: The two models this project ships, as config tables (the executor and dataset-mode galleries).
_EMBEDDED_MODELS = "\n".join(
    f'[[models]]\nname = "{name}"\narch = "{arch}"\nweights = "file:{ROOT}/generator/models/weights/{arch}.safetensors"'
    for name, arch in (("ViT-FMNIST", "vit_fmnist_patch4_28"), ("Swin-FMNIST", "swin_fmnist_patch2_28")))


def _executor_gallery(workdir: Path, name: str, images: int, sections: str):
    """A gallery of the embedded models over ``images`` Fashion-MNIST test images (dataset mode off)."""
    from ..config.loading import load_config

    folder = workdir / f"{name}-images"
    folder.mkdir(parents=True, exist_ok=True)
    data = np.load(ROOT / "tests" / "data" / "fashion_mnist_test_1k.npz")
    from PIL import Image

    for i in range(images):
        Image.fromarray(data["images"][i]).save(folder / f"img{i:04d}.png")
    config = workdir / f"{name}.toml"
    config.write_text(f"""
title = "{name}"
images = "{folder}"
output = "{workdir / name / 'build'}"
site_dir = "{workdir / name / 'site'}"

{_EMBEDDED_MODELS}
{sections}
""")
    return load_config(config)


def bench_executors(scale: Scale, repeats: int, workdir: Path) -> dict:
    """Dask with one worker against the local executor on the same work; 2 workers × 1 thread against
    1 worker × 2 threads on LIME-heavy work. Wall and CPU time (the machine may be shared).

    The Dask side joins a LocalCluster started once (``--scheduler``), as a long build would: the
    cluster's start-up is reported on its own. Every run recomputes (``--no-cache``); the worker's
    torch threads equal this process's for the first comparison, and are 1 everywhere in the second.
    """
    from distributed import Client, LocalCluster

    from ..pipeline.executors import ExecutorSpec
    from ..pipeline.runner import run

    n = scale.executor_images
    light = f"""
[sections.lime]
num_samples = {scale.executor_lime_samples}
[sections.maps]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
enabled = false
"""
    config = _executor_gallery(workdir, "executor", n, light + scale.embedded_extra)
    threads = torch.get_num_threads()
    out: dict = {"name": "executors: Dask vs local", "images": n, "torch_threads": threads}

    def build(spec: ExecutorSpec) -> None:
        result = run(config, use_cache=False, progress=False, log=lambda m: None, executor=spec, write_report=False)
        if not result.ok:
            raise RuntimeError(f"build failed: {result.failures[:2]}")

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=scale.executor_processes, protocol="tcp",
                           host="127.0.0.1", dashboard_address=None)
    out["cluster_start_s"] = time.perf_counter() - start
    try:
        dask_spec = ExecutorSpec(kind="dask", scheduler=cluster.scheduler_address, torch_threads=threads)
        local_spec = ExecutorSpec()
        if scale.executor_warmup:  # the worker imports torch and loads the models once
            build(dask_spec)
            build(local_spec)
        walls: dict[str, list[float]] = {"dask": [], "local": []}
        cpus: dict[str, list[float]] = {"dask": [], "local": []}
        for _ in range(scale.executor_repeats or max(2, repeats // 2)):
            for name, spec in (("dask", dask_spec), ("local", local_spec)):
                wall, cpu = _measured(lambda: build(spec))
                walls[name].append(wall)
                cpus[name].append(cpu)
    finally:
        cluster.close()
    ratio = statistics.median(walls["dask"]) / statistics.median(walls["local"])
    out["one_worker_vs_local"] = {"dask_wall_s": stats(walls["dask"]), "local_wall_s": stats(walls["local"]),
                                  "dask_cpu_s": stats(cpus["dask"]), "local_cpu_s": stats(cpus["local"]),
                                  "ratio": ratio, "goal": "≤ 1.10×", "goal_met": ratio <= 1.10}

    samples = scale.executor_heavy_samples
    m = scale.executor_heavy_images
    lime_heavy = f"""
[sections.heads]
enabled = false
[sections.rollout]
enabled = false
[sections.swin]
enabled = false
[sections.lime]
num_samples = {samples}
[sections.maps]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
enabled = false
"""
    config = _executor_gallery(workdir, "lime-heavy", m, lime_heavy + scale.embedded_extra)
    shapes = {"2 workers × 1 thread": (2, 1), "1 worker × 2 threads": (1, 2)}
    rates = {}
    for label, (workers, per_worker) in shapes.items():
        cluster = LocalCluster(n_workers=workers, threads_per_worker=per_worker, processes=scale.executor_processes,
                               protocol="tcp", host="127.0.0.1", dashboard_address=None)
        try:
            spec = ExecutorSpec(kind="dask", scheduler=cluster.scheduler_address, chunk_size=1, torch_threads=1)
            with Client(cluster.scheduler_address) as client:
                client.wait_for_workers(workers)
            if scale.executor_warmup:  # every worker thread loads its models
                build(spec)
            wall, cpu = _measured(lambda: build(spec))
        finally:
            cluster.close()
        jobs = 2 * m
        rates[label] = {"wall_s": wall, "cpu_s": cpu, "jobs": jobs, "jobs_per_s": jobs / wall,
                        "cpu_utilisation": cpu / wall}
    ratio = rates["2 workers × 1 thread"]["jobs_per_s"] / rates["1 worker × 2 threads"]["jobs_per_s"]
    out["workers_vs_threads"] = {
        "workload": f"LIME only, {samples} samples, {m} images × 2 models, chunk 1, torch 1 thread per task",
        **rates, "throughput_ratio": ratio,
        "note": (f"both layouts keep {rates['2 workers × 1 thread']['cpu_utilisation']:.2f} and "
                 f"{rates['1 worker × 2 threads']['cpu_utilisation']:.2f} cores busy; a LIME job's heavy steps "
                 "(segmentation, the ridge fit, the forward passes) release the GIL, its Python between them "
                 "does not: two processes gain only that share over two threads of one process")}
    return out


def bench_dataset_scaling(scale: Scale, workdir: Path) -> dict:
    """Cost per added image in dataset mode, up to 1,000 images of the embedded models (heads, rollout,
    swin; figures for a sample of 10 plus every misclassified image): local executor, from scratch,
    after a warm-up run (imports, model loads). Linear when the CPU seconds per added image of the
    last step are within 1.25× of the first step's."""
    from ..config.loading import load_config
    from ..pipeline.runner import run

    counts = scale.dataset_images
    data = np.load(ROOT / "tests" / "data" / "fashion_mnist_test_1k.npz")
    classes = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
    from PIL import Image

    def point(n: int) -> dict:
        root = workdir / f"dataset{n}"
        for i in range(n):
            folder = root / "set" / classes[int(data["labels"][i])]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data["images"][i]).save(folder / f"{i:04d}.png")
        config = root / "gallery.toml"
        config.write_text(f"""
title = "Dataset {n}"
images = "{root / 'set'}"
output = "{root / 'build'}"
site_dir = "{root / 'site'}"
[dataset]
enabled = true
sample = {scale.dataset_sample}
{_EMBEDDED_MODELS}
[sections.lime]
enabled = false
[sections.maps]
enabled = false
[sections.probe]
enabled = false
[sections.faithfulness]
enabled = false
{scale.embedded_extra}""")
        cfg = load_config(config)
        holder = {}
        wall, cpu = _measured(lambda: holder.setdefault("r", run(cfg, progress=False, log=lambda m: None)))
        result = holder["r"]
        shutil.rmtree(root, ignore_errors=True)
        return {"images": n, "wall_s": wall, "cpu_s": cpu, "drawing_s": result.drawing_seconds,
                "cpu_s_without_drawing": cpu - result.drawing_seconds, "results": len(result.results),
                "failures": len(result.failures), "with_figures": len(result.dataset["sampled"]),
                "accuracy": {k: v["accuracy"] for k, v in result.dataset["accuracy"].items()}}

    point(scale.dataset_warmup)  # warm-up: imports, model loads, matplotlib's fonts
    points = [point(n) for n in counts]
    def per(a: dict, b: dict, key: str, by: str) -> float:
        return (b[key] - a[key]) / max(b[by] - a[by], 1)

    for point in points:
        point["drawing_s_per_image_with_figures"] = point["drawing_s"] / max(point["with_figures"], 1)
    slopes = [{"from": a["images"], "to": b["images"],
               "wall_s_per_image": per(a, b, "wall_s", "images"),
               "cpu_s_per_image": per(a, b, "cpu_s", "images"),
               "cpu_s_per_image_without_drawing": per(a, b, "cpu_s_without_drawing", "images")}
              for a, b in zip(points, points[1:])]
    # Every misclassified image gets figures, so the images with figures grow unevenly with the set:
    # linearity is judged on the cost without drawing per added image, and on the drawing per image
    # with figures (each point's own average).
    linear = (slopes[-1]["cpu_s_per_image_without_drawing"] <= 1.25 * max(slopes[0]["cpu_s_per_image_without_drawing"], 1e-9)
              and points[-1]["drawing_s_per_image_with_figures"] <= 1.25 * points[0]["drawing_s_per_image_with_figures"])
    return {"name": "dataset mode: cost per added image", "points": points, "slopes": slopes, "linear": bool(linear),
            "note": "2 models × 3 sections per image; CPU time is this process's (the machine may be shared); "
                    "every misclassified image gets figures, so the slopes separate the drawing (per image with "
                    "figures) from the rest (per image)"}


#: Row groups (printed as they finish, one line per row).
ROW_GROUPS = {
    "capture": lambda scale, repeats, work: bench_capture(scale, repeats),
    "lime": lambda scale, repeats, work: bench_lime(scale, repeats),
    "probe": lambda scale, repeats, work: bench_probe(scale, repeats, work),
    "incremental": lambda scale, repeats, work: bench_incremental(scale, repeats, work),
    "faithfulness": lambda scale, repeats, work: bench_faithfulness_curves(scale, repeats),
    "methods": lambda scale, repeats, work: bench_methods(scale, repeats, work),
}
#: Sections of results.json of their own.
REPORTS = {
    "stats_overhead": lambda scale, repeats, work: bench_stats_overhead(scale, scale.stats_repeats or min(3, repeats),
                                                                        work),
    "scaling": lambda scale, repeats, work: bench_scaling(scale, work),
    "memory": lambda scale, repeats, work: bench_memory(scale, work),
    "large_images": lambda scale, repeats, work: bench_large_images(scale, work),
    "batch_sizes": lambda scale, repeats, work: bench_batch_sizes(scale, repeats),
    "floor": lambda scale, repeats, work: bench_floor(scale, repeats),
    "executors": lambda scale, repeats, work: bench_executors(scale, repeats, work),
    "dataset_scaling": lambda scale, repeats, work: bench_dataset_scaling(scale, work),
}


def row_names(scale: Scale) -> dict[str, set[str]]:
    """The names of the rows each row group writes at ``scale``, listed without running anything.

    The tests check a smoke run's rows against this listing, and the smoke listing against the quick
    and full ones up to model names and sizes (:func:`row_kind`).
    """
    from ..relevance.registry import registered_methods

    library = [cls for cls in registered_methods() if cls.wraps]
    n = scale.incremental_images
    return {
        "capture": {f"attention capture: {arch}, batch {batch}" for vit, swin, batch in scale.capture
                    for arch in (vit, swin)} | {f"attention capture: {arch}, batch {batch}"
                                                for arch, _, batch in scale.family_capture},
        "lime": {name for arch, _ in scale.lime for name in (f"LIME vs its forward passes: {arch}",
                                                            f"LIME vs plain lime_image (batch 10): {arch}")},
        "probe": {"probe (cached features) vs one feature-extraction pass",
                  f"probe (cached) vs the plain {scale.probe_epochs}-epoch loop"},
        "incremental": {f"warm rebuild vs cold ({n} images)", f"rebuild after changing 1 of {n} images vs cold"},
        "faithfulness": {f"faithfulness curves vs their forward passes: {arch}" for arch, *_ in scale.faithfulness},
        "methods": {f"{cls.label} vs its passes: {arch}" for arch, _, _, methods in scale.methods for cls in library
                    if methods.get(cls.name, {}).get("enabled", True)},
    }


def row_kind(name: str) -> str:
    """A row's name without its model names and numbers (sizes, counts)."""
    import re

    models = {arch for scale in SCALES.values() for arch in (*scale.floor_models, *(m[0] for m in scale.methods))}
    for arch in sorted(models, key=len, reverse=True):
        name = name.replace(arch, "<model>")
    return re.sub(r"\d+", "N", name)


def main(scale: Scale = FULL, out: Path = ROOT / "bench" / "results.json", only: tuple[str, ...] = (),
         repeats: int = 5) -> dict:
    """Run the benchmarks at ``scale`` (``only``: these row groups and reports, by name) and write ``out``.

    The scale's own repeats (smoke: 1) override ``repeats``.
    """
    unknown = sorted(set(only) - set(ROW_GROUPS) - set(REPORTS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {sorted({*ROW_GROUPS, *REPORTS})}")
    repeats = scale.repeats or repeats
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="vit-gallery-bench-"))
    import generator.models.embedded  # noqa: F401

    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": "cpu", "cuda": torch.cuda.is_available()},
        "versions": {"torch": torch.__version__, "timm": __import__("timm").__version__, "python": platform.python_version()},
        "scale": scale.name, "quick": scale is not FULL, "repeats": repeats, "rows": [],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "only": list(only),
    }
    results["seconds"] = {}  # each benchmark's own wall time, to plan a run
    results["cpu_seconds"] = {}  # and its CPU time (this process and its children, user + system)
    try:
        for name, group in ROW_GROUPS.items():
            if only and name not in only:
                continue
            start, cpu = time.perf_counter(), _own_cpu_seconds()
            for r in group(scale, repeats, work):
                results["rows"].append({**r, "group": name})
                print(_format(r), flush=True)
            results["seconds"][name] = round(time.perf_counter() - start, 1)
            results["cpu_seconds"][name] = round(_own_cpu_seconds() - cpu, 1)
        for name, report in REPORTS.items():
            if only and name not in only:
                continue
            start, cpu = time.perf_counter(), _own_cpu_seconds()
            results[name] = report(scale, repeats, work)
            results["seconds"][name] = round(time.perf_counter() - start, 1)
            results["cpu_seconds"][name] = round(_own_cpu_seconds() - cpu, 1)
            print(name, json.dumps(results[name], indent=1, default=str), flush=True)
        print("seconds per benchmark:", json.dumps(results["seconds"]), flush=True)
        print("CPU seconds per benchmark:", json.dumps(results["cpu_seconds"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return results


def _own_cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been waited for
    (build subprocesses, Dask workers once closed)."""
    me, children = os.times()[:2], os.times()[2:4]
    return sum(me) + sum(children)


def _format(r: dict) -> str:
    met = {True: "met", False: "MISSED", None: "-"}[r["goal_met"]]
    extra = f" speed-up {r['speedup']:.2f}×" if "speedup" in r else ""
    return (f"{r['name']:<62} ours {r['ours_s']['median']:.3f}s [{r['ours_s']['min']:.3f}–{r['ours_s']['max']:.3f}]"
            f"  base {r['baseline_s']['median']:.3f}s  ratio {r['ratio']:.2f}{extra}  goal {r['goal']}: {met}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the same rows on tiny models and few repeats")
    size.add_argument("--smoke", action="store_true",
                      help="every group on the smallest work, one repeat (what the tests run; not measurements)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--only", default="", help="comma-separated benchmarks: " + ", ".join([*ROW_GROUPS, *REPORTS]))
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row (medians); cold builds: at most 3")
    args = parser.parse_args()
    main(scale=SMOKE if args.smoke else QUICK if args.quick else FULL, out=args.out,
         only=tuple(n.strip() for n in args.only.split(",") if n.strip()),
         repeats=max(1, args.repeats))
