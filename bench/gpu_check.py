"""CPU vs CUDA: every section's record for the embedded models, compared within stated tolerances.

Run on a machine with a GPU (about 2 minutes)::

    python bench/gpu_check.py [--images 2] [--lime-samples 200]

For each embedded model (ViT and Swin), image and section (every relevance method enabled, those
the default gallery turns off included) it computes the record on the
CPU and on ``cuda`` from the same inputs and prints, per section, the largest absolute difference
over the record's arrays and numeric metadata, the top-1 agreement, the batch size the auto rule
picked on each device, and the compute time on each. It then runs a whole ``build --device cuda``
of the tiny gallery, which must finish without failures. Exit status 1 when any section is out of
tolerance or anything fails.

Tolerances (absolute, on arrays and numbers; float32 kernels on GPU reduce in other orders):

- attention, rollout and window maps (heads, rollout, swin, maps without LIME): 1e-4
- gradient-weighted rollout: 1e-3 (a backward pass adds rounding)
- LIME weights and scores: 2e-2 (the surrogate is fitted to probabilities that differ at 1e-6, and
  its ridge weights are ill-conditioned); top-1 and the ranked superpixels must agree
- faithfulness AUCs and curves: 1e-3, for maps whose cells were taken in the same order on both
  devices (rebuilt from each record's published cells). Two cells whose relevance differs by less
  than the devices' difference can swap places and change a step of the curve; such maps are counted
  and compared by their cells (the maps tolerance) instead.

Seeded noise is drawn by the CPU generator on every device (SmoothGrad's noise, the randomised model
of the sanity check), so those results are compared like any other.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOLERANCE = {"heads": 1e-4, "rollout": 1e-3, "swin": 1e-4, "maps": 2e-2, "lime": 2e-2, "faithfulness": 1e-3}
#: the cells of the faithfulness record are a map resampled: the maps tolerance
CELLS_TOLERANCE = 2e-2


def numbers(value, prefix=""):
    """Flatten the numeric leaves of a record's metadata: path → float."""
    out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(numbers(v, f"{prefix}.{k}"))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def difference(a, b) -> tuple[float, str]:
    """Largest absolute difference between two records (arrays and numeric metadata) and where."""
    worst, where = 0.0, ""
    for name in sorted(set(a.arrays) | set(b.arrays)):
        x, y = a.arrays.get(name), b.arrays.get(name)
        if x is None or y is None or x.shape != y.shape:
            return float("inf"), f"array {name}: shapes {getattr(x, 'shape', None)} vs {getattr(y, 'shape', None)}"
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            d = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
        else:
            d = 0.0 if np.array_equal(x, y) else float("inf")
        if d > worst:
            at = np.unravel_index(int(np.argmax(np.abs(x.astype(np.float64) - y.astype(np.float64)))), x.shape)
            worst, where = d, f"array {name}{list(map(int, at))}"
    na, nb = numbers(a.meta), numbers(b.meta)
    for key in sorted(set(na) | set(nb)):
        if key.endswith("seconds") or key not in na or key not in nb:
            continue
        d = abs(na[key] - nb[key])
        if d > worst:
            worst, where = d, f"meta {key}"
    return worst, where


ORDER_KEYS = ("deletion_auc", "insertion_auc", "score", "road", "road_morf", "road_lerf")


def order_is_certain(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a map's cells were taken in the same order on both devices.

    The section orders cells by their published float32 values, ties by position
    (:func:`generator.analysis.faithfulness.cell_order`), so the order rebuilt from each record's cells is the
    order that device used, and equal orders mean the curves saw the same inputs."""
    from generator.analysis.faithfulness import cell_order

    return bool(np.array_equal(cell_order(x), cell_order(y)))


def first_swap(x: np.ndarray, y: np.ndarray) -> str:
    """Where two devices' cell orders first part: the rank, the two cells, and how far apart they
    are on the CPU against how much the map differs between the devices."""
    from generator.analysis.faithfulness import cell_order

    x, y = x.reshape(-1).astype(np.float64), y.reshape(-1).astype(np.float64)
    ox, oy = cell_order(x), cell_order(y)
    rank = int(np.argmax(ox != oy))
    i, j = int(ox[rank]), int(oy[rank])
    return (f"first at rank {rank} of {x.size}: cells {i} and {j} are {abs(x[i] - x[j]):.1e} apart, "
            f"the map differs by up to {float(np.abs(x - y).max()):.1e} between devices")


def faithfulness_difference(a, b) -> tuple[float, str, int]:
    """As :func:`difference`, but a map whose cell order differs between the devices (two cells whose
    relevance lies within rounding of each other swap places) is compared by its cells only: its
    curves, AUCs and ROAD scores follow the order and legitimately differ. Returns the worst
    difference, where, and the maps ordered differently (with their cells' largest difference)."""
    cells_a, cells_b = a.arrays["cells"], b.arrays["cells"]
    same = [order_is_certain(x, y) for x, y in zip(cells_a, cells_b)]
    keep = np.array(same)
    trimmed = []
    for record in (a, b):
        arrays = {k: v for k, v in record.arrays.items() if k != "cells"}
        arrays["curves"] = arrays["curves"][keep]
        if "road" in arrays:
            arrays["road"] = arrays["road"][keep]
        rows = [{k: v for k, v in row.items() if ok or k not in ORDER_KEYS}
                for row, ok in zip(record.meta["rows"], same)]
        trimmed.append(type(record)(section=record.section, model=record.model, image=record.image, arrays=arrays,
                                    meta={**record.meta, "rows": rows}))
    worst, where = difference(*trimmed)
    cells = float(np.max(np.abs(cells_a.astype(np.float64) - cells_b.astype(np.float64)))) if cells_a.size else 0.0
    if cells > CELLS_TOLERANCE:  # the maps themselves disagree: out of tolerance whatever the rest says
        worst, where = float("inf"), f"array cells differ by {cells:.2e}"
    reordered = [f"{m}: {first_swap(x, y)}" for m, x, y, ok in zip(a.meta["methods"], cells_a, cells_b, same)
                 if not ok]
    return worst, where, reordered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--lime-samples", type=int, default=200)
    parser.add_argument("--against", default="cuda", help="the device compared with the CPU ('cpu' dry-runs the script)")
    args = parser.parse_args()

    import torch

    other = args.against
    if other == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    import generator.models.embedded  # noqa: F401
    from generator.config.loading import parse_config
    from generator.data.images import scan_images
    from generator.models.loaded import ACCELERATOR_BATCH, load_model
    from generator.pipeline.plan import compute_job
    from generator.relevance.registry import RelevanceStore
    from generator.pipeline.report import trimmed_traceback
    from generator.sections import SECTIONS

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    images_dir = work / "images"
    images_dir.mkdir()
    for source in sorted((ROOT / "images" / "fashion").glob("*.png"))[: args.images]:
        (images_dir / source.name).write_bytes(source.read_bytes())
    data = {
        "title": "GPU check", "images": str(images_dir), "output": str(work / "build"), "site_dir": str(work / "site"),
        "models": [{"name": "ViT-FMNIST", "arch": "vit_fmnist_patch4_28",
                    "weights": f"file:{ROOT}/generator/models/weights/vit_fmnist_patch4_28.safetensors"},
                   {"name": "Swin-FMNIST", "arch": "swin_fmnist_patch2_28",
                    "weights": f"file:{ROOT}/generator/models/weights/swin_fmnist_patch2_28.safetensors"}],
        "sections": {"lime": {"num_samples": args.lime_samples}, "probe": {"enabled": False},
                     "faithfulness": {"random_seeds": [0]}},
        # every method on, those the default gallery turns off for CPU time included
        "methods": {"lime": {"num_samples": args.lime_samples}, "score-cam": {"enabled": True},
                    "integrated-gradients": {"enabled": True}, "smoothgrad": {"enabled": True},
                    "kernel-shap": {"enabled": True}},
    }
    config = parse_config(data)
    images, _ = scan_images(config.images)
    failed = False
    print(f"device: {torch.cuda.get_device_name(0) if other == 'cuda' else other}; torch {torch.__version__}")
    print(f"{'model':<12} {'section':<13} {'max |cpu-cuda|':>15} {'tolerance':>10} {'top-1':>6} "
          f"{'cpu s':>7} {'cuda s':>7}  where")
    for model_config in config.models:
        models = {dev: load_model(model_config, d) for dev, d in (("cpu", "cpu"), ("cuda", other))}
        batch = {dev: m.batch_size("auto") for dev, m in models.items()}
        if other != "cpu" and batch["cuda"] != ACCELERATOR_BATCH:
            print(f"{model_config.name}: auto batch on cuda is {batch['cuda']}, expected {ACCELERATOR_BATCH}")
            failed = True
        for cls in SECTIONS:
            section = cls(config)
            if not section.enabled() or not section.per_image or not section.applies_to(models["cpu"]):
                continue
            worst, where, agree, seconds = 0.0, "", True, {"cpu": 0.0, "cuda": 0.0}
            compared, reordered = 0, set()
            broken = False
            for image in images:
                if broken:  # the other images would fail the same way
                    break
                if not section.applies_to_image(image):  # e.g. perturbation without declared variants
                    continue
                records = {}
                for dev, model in models.items():
                    section.store = RelevanceStore(None)  # maps computed afresh on each device
                    torch.manual_seed(0)
                    start = time.perf_counter()
                    try:
                        records[dev] = compute_job(section, model, image)
                    except Exception as exc:  # a device mismatch or a kernel missing on CUDA
                        print(f"{model_config.name:<12} {section.name:<13} FAILED on {dev}: {type(exc).__name__}: {exc}")
                        print(textwrap.indent(trimmed_traceback(exc, limit=4), "    "))
                        failed = broken = True
                        break
                    if dev == "cuda" and other == "cuda":
                        torch.cuda.synchronize()
                    seconds[dev] += time.perf_counter() - start
                if len(records) < 2:
                    continue
                compared += 1
                if section.name == "faithfulness":
                    d, w, swapped = faithfulness_difference(records["cpu"], records["cuda"])
                    reordered.update(f"{image.slug}: {m}" for m in swapped)
                else:
                    d, w = difference(records["cpu"], records["cuda"])
                if d > worst:
                    worst, where = d, f"{image.slug}: {w}"
                tops = [r.meta.get("top", [{}])[0].get("index") for r in records.values()]
                agree &= tops[0] == tops[1]
            if not compared:
                continue
            tolerance = TOLERANCE.get(section.name, 1e-4)
            ok = worst <= tolerance and agree
            failed |= not ok
            print(f"{model_config.name:<12} {section.name:<13} {worst:>15.2e} {tolerance:>10.0e} "
                  f"{'same' if agree else 'DIFF':>6} {seconds['cpu']:>7.2f} {seconds['cuda']:>7.2f}  "
                  f"{where}{'' if ok else '   <-- OUT OF TOLERANCE'}")
            if reordered:
                print(f"{'':<12} {'':<13} {len(reordered)} map(s) whose cells were taken in another order on each "
                      "device (near-tied cells): curves, AUCs and ROAD left out, cells compared:")
                for name in sorted(reordered):
                    print(f"{'':<12} {'':<13}   {name}")
        print(f"{model_config.name}: auto batch cpu {batch['cpu']}, cuda {batch['cuda']}")

    from generator.builder import build

    start = time.perf_counter()
    # the whole build on the device, the linear probe included (scikit-learn's digits ship offline)
    probe = config.sections.probe.model_copy(update={"enabled": True, "datasets": {"digits": "sklearn:digits"},
                                                     "epochs": 2})
    whole = config.model_copy(update={"run": config.run.model_copy(update={"device": other}),
                                      "sections": config.sections.model_copy(update={"probe": probe})})
    outcome = build(whole, site=False)
    print(f"build --device {other}: {len(outcome.run.results)} results, {len(outcome.run.failures)} failures, "
          f"{time.perf_counter() - start:.1f}s")
    for f in outcome.run.failures:
        print(f"  FAILED [{f.stage}] {f.section} / {f.model} / {f.image}: {f.error}")
        print(textwrap.indent(f.traceback, "      "))
    failed |= not outcome.run.ok
    print("GPU CHECK:", "FAILED" if failed else "passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
