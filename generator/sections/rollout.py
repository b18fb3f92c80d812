"""Section: attention rollout for ViT models (fusions, discard sweep, progression, gradient-weighted)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, Strict

from ..store.cache import Record
from ..data.images import ImageItem
from ..models.loaded import LoadedModel
from ..config.settings import Bool, Int, SectionSettings
from .base import ModelInput, Section
from .common import prediction_meta, resolve_query

if TYPE_CHECKING:
    from matplotlib.figure import Figure


Fusion = Literal["mean", "max", "min"]
DiscardRatio = Annotated[float, Strict(), Field(ge=0.0, lt=1.0)]


class RolloutSettings(SectionSettings):
    """Attention rollout (the study's Figures 2 and 3), models with global attention rows; read at the
    class token's row, or at the mean patch row for a model without one."""

    #: Head fusions drawn side by side (Figure 2).
    fusions: tuple[Fusion, ...] = Field(default=("mean", "max", "min"), min_length=1)
    #: Discard ratios; more than one gives a small sweep (one row each).
    discard_ratios: tuple[DiscardRatio, ...] = Field(default=(0.9,), min_length=1)
    #: First block included (the study skips block 0).
    start_block: Int = Field(default=1, ge=0)
    normalize: Bool = False
    #: Fusion used for the progression strip over blocks (Figure 3).
    progression_fusion: Fusion = "mean"
    #: Gradient-weighted rollout (Chefer et al. 2021) for the predicted class.
    gradient: Bool = True
    gradient_start_block: Int = Field(default=0, ge=0)


class RolloutSection(Section):
    Settings = RolloutSettings
    name = "rollout"
    title = "Information flow: attention rollout"
    needs = frozenset({"attention-rows"})
    template = "sections/rollout.md.j2"
    chapter = ("information-flow", "Information flow", "chapters/rollout_intro.md.j2")

    def compute(self, model: LoadedModel, image: ImageItem, inputs: ModelInput) -> Record:
        import torch

        from ..attention.rollout import attention_rollout, gradient_rollout, rollout_mask, rollout_progression

        s = self.settings
        layout = model.adapter.token_layout(model.module)
        # the class token's row where there is one, else the mean of the patch rows (what an average pool reads)
        query = resolve_query("auto", layout)
        row = layout.class_token_index if query == "cls" else "mean"
        x = inputs.x[None].to(model.device)
        with torch.inference_mode():
            logits, attn = model.adapter.attention(model.module, x)
        attn = attn.double()  # products over many blocks: keep them exact
        common = dict(start_block=s.start_block, normalize=s.normalize, keep_index=layout.class_token_index)
        if s.start_block >= attn.shape[0]:
            raise ValueError(f"start_block {s.start_block} but {model.name} has {attn.shape[0]} blocks")
        masks = torch.stack([
            torch.stack([
                rollout_mask(attention_rollout(attn, head_fusion=f, discard_ratio=r, **common), layout.grid,
                             layout.num_prefix_tokens, query=row)[0]
                for f in s.fusions
            ])
            for r in s.discard_ratios
        ])  # ratios, fusions, h, w
        progression = rollout_progression(attn, layout.grid, layout.num_prefix_tokens, head_fusion=s.progression_fusion,
                                          discard_ratio=s.discard_ratios[0], query=row, **common)[:, 0]
        arrays = {"view": inputs.view, "masks": masks.float().cpu().numpy(), "progression": progression.float().cpu().numpy()}
        meta = {**prediction_meta(model, logits[0]), "fusions": list(s.fusions), "discard_ratios": list(s.discard_ratios),
                "start_block": s.start_block, "normalize": s.normalize, "progression_fusion": s.progression_fusion,
                "blocks": list(range(s.start_block, attn.shape[0])), "grid": list(layout.grid)}
        if query != "cls":  # records of models with a class token read its row, as before "auto"
            meta["query"] = query
        if s.gradient and not model.has("classifier-head"):
            meta["gradient_skipped"] = "headless: no class whose gradient could weight the attention"
        elif s.gradient:
            target = logits.argmax(-1)
            _, attn_used, grads = model.adapter.attention_gradients(model.module, x, target)
            weighted = gradient_rollout(attn_used.double(), grads.double(), start_block=s.gradient_start_block)
            arrays["gradient"] = rollout_mask(weighted, layout.grid, layout.num_prefix_tokens, query=row)[0].float().cpu().numpy()
            arrays["plain"] = rollout_mask(attention_rollout(attn, discard_ratio=0.0, start_block=s.gradient_start_block,
                                                             keep_index=layout.class_token_index),
                                           layout.grid, layout.num_prefix_tokens, query=row)[0].float().cpu().numpy()
            meta["gradient_target"] = model.class_names[int(target[0])]
        return Record(section=self.name, model=model.name, image=image.slug, arrays=arrays, meta=meta)

    def render(self, record: Record) -> dict[str, Figure]:
        from ..render.rollout import fusion_figure, gradient_figure, progression_figure

        m, a = record.meta, record.arrays
        figures = {
            "": fusion_figure(a["view"], a["masks"], m["fusions"], m["discard_ratios"],
                              f"{m['model_display']}: rollout by head fusion"),
            "progression": progression_figure(a["view"], a["progression"], m["blocks"],
                                              f"{m['model_display']}: rollout block by block"),
        }
        if "gradient" in a:
            figures["gradient"] = gradient_figure(a["view"], a["plain"], a["gradient"], m["gradient_target"],
                                                  f"{m['model_display']}: plain vs gradient-weighted rollout")
        return figures

    def page_extras(self, results) -> dict:
        """Failed sanity checks of the rollout maps (faithfulness results of the same image and model)."""
        from ..analysis.caveats import sanity_caveats

        return {"sanity": sanity_caveats(self.build, results, lambda title: "rollout" in title)}

    def caption(self, record: Record, figure_id: str = "") -> str:
        m = record.meta
        norm = "rows re-normalised" if m["normalize"] else "rows not re-normalised"
        mean = m.get("query") == "mean"
        row, token = (("the mean patch row", "the mean patch row (the model has no class token)") if mean
                      else ("the CLS row", "the CLS token"))
        if figure_id == "progression":
            return (f"{m['model_display']}: {row} of the rollout after each block from block {m['start_block']} "
                    f"({m['progression_fusion']} fusion, discard {m['discard_ratios'][0]:g}, {norm}); "
                    "each panel scaled to its maximum.")
        if figure_id == "gradient":
            return (f"{m['model_display']}: plain rollout (mean fusion, no discard) next to the gradient-weighted rollout "
                    f"for the predicted class {m['gradient_target']}, both from block {0}; scaled to their maxima.")
        return (f"{m['model_display']}: rollout of {token} from block {m['start_block']} with "
                f"{', '.join(m['fusions'])} head fusion and discard ratio {', '.join(f'{r:g}' for r in m['discard_ratios'])}, "
                f"{norm}; each panel scaled to its maximum.")


# ------------------------------------------------------------------ relevance maps owned by this section
