"""Rendering: records → matplotlib Figures. The only place that draws; it never recomputes."""

#: Bump whenever figures or captions change: figure stamps carry it, so cached figures are drawn again.
#: (Kept here, free of matplotlib, so that a fully cached build never imports it.)
RENDER_VERSION = 7


def data_path(png: str) -> str:
    """The numbers behind a figure (``<stem>.data.json``, written by ``style.save_figure``), from its PNG path."""
    return png[: -len(".png")] + ".data.json" if png.endswith(".png") else png + ".data.json"
