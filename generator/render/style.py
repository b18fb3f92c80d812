"""One figure style for the whole gallery, and the function that writes PNG + PDF.

Legibility is enforced here, by construction: figures are read at the content column's width
(:data:`DISPLAY_WIDTH_PX` CSS pixels; wider PNGs are scaled down to it, narrower ones are shown
at their own size), and :func:`make_legible` raises every text element of a figure to at least
:data:`MIN_TEXT_PX` pixels at that width before it is saved, measured on the bounding box that
is actually saved (``bbox_inches="tight"``). :func:`text_sizes` gives the same measurement to
the tests.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # never a GUI backend inside the pipeline
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ..store.atomic import write_if_changed  # noqa: E402
from .pngopt import optimise_png  # noqa: E402
from . import data_path  # noqa: E402,F401  (re-exported: the data file beside a figure)

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 10,
    "axes.formatter.useoffset": False,  # no "1e−5" offset text floating over a title
    "axes.formatter.limits": (-3, 4),
    "image.cmap": "viridis",  # perceptually uniform
    "pdf.fonttype": 42,  # embed TrueType: text stays selectable and editable in papers
    "svg.fonttype": "none",
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
}
matplotlib.rcParams.update(STYLE)

#: Metadata that would make files differ between identical runs.
_PNG_METADATA = {"Software": None}
_PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}


#: Width of the site's content column in CSS pixels: the width figures are read at.
DISPLAY_WIDTH_PX = 640
#: The smallest a figure's text may be at that width, in CSS pixels.
MIN_TEXT_PX = 9.0


def _renderer(fig: Figure):
    canvas = fig.canvas
    if not hasattr(canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    return canvas.get_renderer()


def saved_width_inches(fig: Figure) -> float:
    """Width of the PNG/PDF as saved (tight bounding box plus its padding), in inches."""
    fig.draw_without_rendering()
    return float(_saved_box(fig).width)


def _saved_box(fig: Figure):
    """The box ``savefig(bbox_inches="tight")`` saves (tight box plus the padding), in inches, as
    matplotlib computes it; the figure must have been drawn (laid out) first."""
    pad = float(matplotlib.rcParams["savefig.pad_inches"])
    return fig.get_tightbbox(_renderer(fig)).padded(pad)


def pixels_per_point(width_in: float, dpi: float, display_px: float = DISPLAY_WIDTH_PX) -> float:
    """CSS pixels per typographic point when a figure ``width_in`` wide, saved at ``dpi``, is shown
    in a column ``display_px`` wide (scaled down when wider, shown at its own size when narrower)."""
    png_px = width_in * dpi
    shown_px = min(png_px, display_px)
    return shown_px / width_in / 72.0


def min_font_points(width_in: float, dpi: float) -> float:
    """The smallest font (points) that is :data:`MIN_TEXT_PX` at the column width."""
    return MIN_TEXT_PX / pixels_per_point(width_in, dpi)


def visible_texts(fig: Figure) -> list[Text]:
    """Every visible, non-empty text element of the figure (titles, labels, ticks, legends, notes)."""
    fig.draw_without_rendering()  # ticks and their labels exist only once drawn
    return _drawn_texts(fig)


def _drawn_texts(fig: Figure) -> list[Text]:
    """:func:`visible_texts` of a figure that has just been drawn."""
    hidden: set[int] = set()  # an axes drawn with set_axis_off() draws no ticks or axis labels
    for ax in fig.findobj(lambda a: hasattr(a, "axison")):
        if not ax.axison or not ax.get_visible():
            hidden.update(id(t) for axis in (ax.xaxis, ax.yaxis) for t in axis.findobj(Text))
            continue
        for axis in (ax.xaxis, ax.yaxis):  # ticks outside the view are not drawn either
            lo, hi = sorted(axis.get_view_interval())
            slack = 1e-9 * max(1.0, abs(hi - lo))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - slack <= tick.get_loc() <= hi + slack:
                    hidden.update((id(tick.label1), id(tick.label2)))
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden
            and (t.axes is None or t.axes.get_visible())]


def text_sizes(fig: Figure, dpi: float) -> list[tuple[str, float]]:
    """(text, size in CSS pixels at the column width) of every visible text element."""
    scale = pixels_per_point(saved_width_inches(fig), dpi)
    return [(t.get_text(), t.get_fontsize() * scale) for t in visible_texts(fig)]


def make_legible(fig: Figure, dpi: float) -> Figure:
    """Raise every text element to at least :data:`MIN_TEXT_PX` at the column width.

    Larger text can widen the saved box, which shrinks everything shown, so the measure is
    repeated until it holds. Figures are designed to need no change; this is the guarantee.
    """
    _legible_box(fig, dpi)
    return fig


def _legible_box(fig: Figure, dpi: float):
    """:func:`make_legible`, returning the box the figure will be saved with (one layout per round)."""
    fig.set_dpi(dpi)  # measure with the renderer the PNG is drawn with
    for _ in range(6):
        fig.draw_without_rendering()
        box = _saved_box(fig)
        need = min_font_points(float(box.width), dpi) * 1.001
        small = [t for t in _drawn_texts(fig) if t.get_fontsize() < need]
        if not small:
            return box
        for t in small:
            t.set_fontsize(need)
    fig.draw_without_rendering()
    return _saved_box(fig)


def attach_data(fig: Figure, **arrays: Any) -> Figure:
    """Keep the numbers a figure draws with it; :func:`save_figure` writes them as ``<stem>.data.json``."""
    fig._vit_gallery_data = {**getattr(fig, "_vit_gallery_data", {}), **arrays}
    return fig


def data_bytes(data: dict[str, Any]) -> bytes:
    """The numbers behind a figure as byte-stable JSON (sorted keys, float32 precision)."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f":
                return np.vectorize(lambda v: float(f"{v:.7g}"), otypes=[object])(value).tolist() if value.size else []
            return value.tolist()
        if isinstance(value, (np.floating, float)):
            return float(f"{float(value):.7g}")
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return (json.dumps(plain(data), sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def figure_bytes(fig: Figure, fmt: str, dpi: int, box=None) -> bytes:
    """Encode ``fig`` as PNG or PDF, byte-stable across runs.

    ``box``: the saved area in inches from :func:`_legible_box` (the figure already laid out);
    default: matplotlib's tight box, measured by ``savefig`` itself.
    """
    buffer = io.BytesIO()
    metadata = _PNG_METADATA if fmt == "png" else _PDF_METADATA
    if box is None:
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    else:  # the layout is done and the box known: savefig draws once instead of laying out again
        engine = fig.get_layout_engine()
        fig.set_layout_engine("none")
        try:
            fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata, bbox_inches=box)
        finally:
            fig.set_layout_engine(engine)
    return buffer.getvalue()


def save_figure(fig: Figure, stem: Path, dpi: int, pdf: bool = True) -> list[Path]:
    """Write ``stem.png`` (at ``dpi``, losslessly optimised: :func:`generator.render.pngopt.optimise_png`), ``stem.pdf``
    (vector; unless ``pdf`` is False) and, when the figure carries its numbers (:func:`attach_data`),
    ``stem.data.json``; only rewrite changed files. Text is made legible first.

    The figure is laid out and measured once and the PNG drawn into that box
    (``savefig(bbox_inches="tight")`` would lay out and measure again). The PDF's box is measured
    by ``savefig`` with the PDF renderer's own text metrics: Agg's are over a point off them at
    screen dpi.
    """
    box = _legible_box(fig, dpi)
    paths = []
    for fmt in ("png", "pdf") if pdf else ("png",):
        path = stem.with_suffix(f".{fmt}")
        data = figure_bytes(fig, fmt, dpi, box if fmt == "png" else None)
        write_if_changed(path, optimise_png(data) if fmt == "png" else data)
        paths.append(path)
    data = getattr(fig, "_vit_gallery_data", None)
    if data:
        path = stem.with_name(stem.name + ".data.json")
        write_if_changed(path, data_bytes(data))
        paths.append(path)
    return paths


def new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    """A pyplot-free Figure (nothing global to close)."""
    return Figure(figsize=(width, height), layout=layout)


def label_colorbar(bar, label: str, digits: int = 2) -> None:
    """Say what a colour bar measures, with ticks from the one number format (no offset text).

    Very small or large scales get a factor in the label ("LIME weight (×10⁻⁵)") instead of
    matplotlib's floating "1e−5", which used to cut through the panel titles above.
    """
    from matplotlib.ticker import FuncFormatter

    from .text import fmt_fixed

    lo, hi = bar.mappable.get_clim()
    peak = max(abs(float(lo)), abs(float(hi)))
    exponent = int(np.floor(np.log10(peak))) if peak > 0 else 0
    if exponent < -2 or exponent > 3:
        factor = 10.0 ** exponent
        label = f"{label} (×10{_superscript(exponent)})"
    else:
        factor = 1.0
    bar.update_ticks()
    ticks = [float(t) / factor for t in bar.get_ticks()]
    steps = [abs(b - a) for a, b in zip(ticks, ticks[1:]) if b != a]
    decimals = max(0, -int(np.floor(np.log10(min(steps))))) if steps else digits
    decimals = min(decimals, digits + 3)
    bar.formatter = FuncFormatter(lambda v, _pos: fmt_fixed(v / factor, decimals))
    bar.update_ticks()
    bar.set_label(label)


def _superscript(n: int) -> str:
    return str(n).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
