"""Section: Swin window-attention maps and the Swin rollout (Swin family only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, Strict

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..config.settings import Bool, SectionSettings
from .base import ModelInput, Section
from .common import prediction_meta

if TYPE_CHECKING:
    from matplotlib.figure import Figure


Pair = Annotated[tuple[Annotated[int, Strict(), Field(ge=1)], ...], Field(min_length=2, max_length=2)]


class SwinSettings(SectionSettings):
    """Swin window-attention maps (the study's Figure 4) and the Swin rollout, models with shifted windows."""

    #: Blocks drawn as window maps, as [stage, block] pairs counted from 1 (the study: stage 3, block 1).
    #: Pairs a model does not have are skipped, and the page says so.
    targets: tuple[Pair, ...] = ((3, 1), (1, 1))
    #: The query patch inside every window: "center" or [row, col] within the window.
    query: Union[Literal["center"], Annotated[tuple[Annotated[int, Strict(), Field(ge=0)], ...],
                                              Field(min_length=2, max_length=2)]] = "center"
    #: "overlay" (maps on the image), "raw" (maps alone) or "both".
    style: Literal["overlay", "raw", "both"] = "overlay"
    rollout: Bool = True
    rollout_fusion: Literal["mean", "max", "min"] = "mean"
    rollout_discard_ratio: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = 0.9
    rollout_normalize: Bool = False


class SwinSection(Section):
    Settings = SwinSettings
    name = "swin"
    title = "Swin attention: windows, shifts and rollout"
    needs = frozenset({"windows"})
    template = "sections/swin.md.j2"
    chapter = ("swin-attention", "Swin attention", "chapters/swin_intro.md.j2")

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        from ..attention.windows import swin_rollout, window_query_maps

        s = self.settings
        with torch.inference_mode():
            logits, attention, geometry = model.adapter.window_attention(model.module, inputs.x[None].to(model.device))
        arrays = {"view": inputs.view}
        targets, skipped = [], []
        for stage, block in s.targets:
            key = (stage - 1, block - 1)
            if key not in attention:
                skipped.append([stage, block])
                continue
            g = geometry[key]
            query = (g.window[0] // 2, g.window[1] // 2) if s.query == "center" else tuple(s.query)
            maps, positions = window_query_maps(attention[key], g, query)
            maps = maps[0]
            name = f"s{stage}b{block}"
            arrays[f"maps_{name}"] = torch.cat([maps, maps.mean(0, keepdim=True)]).float().cpu().numpy()
            arrays[f"queries_{name}"] = positions.cpu().numpy()
            targets.append({"id": name, "stage": stage, "block": block, "heads": int(maps.shape[0]),
                            "windows": int(positions.shape[0]), "query": list(query),
                            "geometry": {"grid": list(g.grid), "window": list(g.window), "shift": list(g.shift)}})
        meta = {**prediction_meta(model, logits[0]), "targets": targets, "skipped_targets": skipped,
                "style": s.style, "rollout": s.rollout, "stages": len({k[0] for k in attention})}
        if s.rollout:
            relevance, progression = swin_rollout(attention, geometry, head_fusion=s.rollout_fusion,
                                                  discard_ratio=s.rollout_discard_ratio, normalize=s.rollout_normalize)
            arrays["rollout"] = relevance[0].float().cpu().numpy()
            arrays["rollout_progression"] = torch.stack([p[0] for p in progression]).float().cpu().numpy()
            meta.update(rollout_fusion=s.rollout_fusion, rollout_discard_ratio=s.rollout_discard_ratio,
                        rollout_normalize=s.rollout_normalize,
                        rollout_grid=list(relevance.shape[-2:]))
        return Record(section=self.name, model=model.name, image=image.slug, arrays=arrays, meta=meta)

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.swin import swin_rollout_figure, window_map_figure

        m, a = record.meta, record.arrays
        figures = {}
        styles = {"overlay": [False], "raw": [True], "both": [False, True]}[m["style"]]
        for t in m["targets"]:
            labels = [f"head {h}" for h in range(t["heads"])] + ["mean of heads"]
            for raw in styles:
                fid = f"{t['id']}{'-raw' if raw else ''}"
                kind = "shifted windows" if any(t["geometry"]["shift"]) else "windows"
                figures[fid] = window_map_figure(
                    a["view"], a[f"maps_{t['id']}"], a[f"queries_{t['id']}"], t["geometry"], labels, raw,
                    f"{m['model_display']}: stage {t['stage']}, block {t['block']} ({kind})")
        if "rollout" in a:
            figures["rollout"] = swin_rollout_figure(a["view"], a["rollout"], a["rollout_progression"],
                                                     f"{m['model_display']}: rollout through windows and merging")
        return figures

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        if figure_id == "rollout":
            norm = "rows re-normalised" if m["rollout_normalize"] else "rows not re-normalised"
            return (f"{m['model_display']}: Swin rollout over the {m['rollout_grid'][0]}×{m['rollout_grid'][1]} stage-1 grid "
                    f"({m['rollout_fusion']} fusion, discard {m['rollout_discard_ratio']:g}, {norm}), carried through "
                    "patch merging and averaged over the final tokens; then the same read after each stage. "
                    "Each panel scaled to its maximum.")
        target = next(t for t in m["targets"] if figure_id.split("-")[0] == t["id"])
        g = target["geometry"]
        shift = f"shifted by {g['shift'][0]}×{g['shift'][1]}" if any(g["shift"]) else "not shifted"
        from ..render.text import plural

        return (f"{m['model_display']}: stage {target['stage']}, block {target['block']}: {plural(target['windows'], 'window')} of "
                f"{g['window'][0]}×{g['window'][1]} patches ({shift}) on a {g['grid'][0]}×{g['grid'][1]} grid; red lines are "
                f"window borders and red squares the query patch of each window (position {target['query']} inside it). "
                f"One panel per head, then the mean; each scaled to its maximum"
                f"{'; raw attention on the stage grid' if figure_id.endswith('-raw') else '; drawn over the image'}.")


# ------------------------------------------------------------------ relevance maps owned by this section
