"""One figure style for the whole gallery, and the function that writes PNG + PDF."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never a GUI backend inside the pipeline
from matplotlib.figure import Figure  # noqa: E402

from ..atomic import write_if_changed  # noqa: E402

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "figure.titlesize": 10,
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


def figure_bytes(fig: Figure, fmt: str, dpi: int) -> bytes:
    """Encode ``fig`` as PNG or PDF, byte-stable across runs."""
    buffer = io.BytesIO()
    metadata = _PNG_METADATA if fmt == "png" else _PDF_METADATA
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    return buffer.getvalue()


def save_figure(fig: Figure, stem: Path, dpi: int) -> list[Path]:
    """Write ``stem.png`` (at ``dpi``) and ``stem.pdf`` (vector); only rewrite changed files."""
    paths = []
    for fmt in ("png", "pdf"):
        path = stem.with_suffix(f".{fmt}")
        write_if_changed(path, figure_bytes(fig, fmt, dpi))
        paths.append(path)
    return paths


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free Figure (nothing global to close)."""
    return Figure(figsize=(width, height), layout=None)
