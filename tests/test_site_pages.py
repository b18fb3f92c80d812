"""Page pieces that make whole classes of rendering bugs impossible, checked without a build."""

from __future__ import annotations

import json

import markdown
import pytest
import pandas as pd
from markupsafe import Markup

from generator.data.known_labels import read_known_labels
from generator.site.pages import (blank_lines_around_tables, deterministic_zip, escape_md, markdown_table,
                                  strip_source_maps, strip_unused_search_languages, unique_labels)

EXTENSIONS = ["tables", "attr_list", "md_in_html", "pymdownx.superfences", "pymdownx.tabbed"]


def render(text: str) -> str:
    return markdown.markdown(text, extensions=EXTENSIONS, extension_configs={"pymdownx.tabbed": {"alternate_style": True}})


def test_a_table_never_swallows_the_next_heading():
    table = markdown_table(pd.DataFrame([{"Model A": "x", "IoU": "0.5"}]))
    assert table.startswith("\n") and table.endswith("\n\n")
    assert markdown_table(table) is table  # already converted: unchanged
    page = "Agreement:\n" + str(table).strip() + "\n## 1-trouser.png\n| a |\n|---|\n| 1 |\nText after"
    fixed = blank_lines_around_tables(page)
    html = render(fixed)
    assert "<h2" in html and "## " not in html and "Text after</p>" in html
    assert html.count("<table>") == 2


def test_code_fences_are_left_alone():
    text = "```\n| a |\nnot a table\n```\n"
    assert blank_lines_around_tables(text) == text


def test_escaped_text_reads_the_same_in_markdown_and_raw_html():
    name = "ViT-FMNIST (1438 train) [x](y) **b** <i>_</i> # | ` \\"
    escaped = escape_md(name)
    inline = render(f"Caption: {escaped}")
    raw = render(f'<figure><figcaption>{escaped}</figcaption></figure>')
    import html as html_lib

    for out in (inline, raw):
        text = html_lib.unescape(out)
        assert name in text, text
        assert "<i>" not in out and "<strong>" not in out and "<a " not in out


def test_tab_labels_are_unique_and_tab_sets_do_not_merge():
    assert unique_labels(["Swin", "Swin", "ViT", "Swin"]) == ["Swin", "Swin (2)", "ViT", "Swin (3)"]
    assert unique_labels(["A", "A (2)", "A"]) == ["A", "A (2)", "A (3)"]
    text = '===! "Swin"\n\n    one\n\n===! "Swin · raw"\n\n    two\n'
    assert render(text).count('class="tabbed-set') == 2


def test_known_labels(tmp_path):
    assert read_known_labels(tmp_path).labels == {}
    (tmp_path / "labels.csv").write_text("file,label\na.png,Trouser\nb.png,\n", encoding="utf-8")
    known = read_known_labels(tmp_path)
    assert known.labels == {"a.png": "Trouser"} and len(known.problems) == 1
    (tmp_path / "labels.csv").write_text("name;class\n", encoding="utf-8")
    assert read_known_labels(tmp_path).problems


def test_zip_is_deterministic_and_source_maps_go(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.txt").write_text("a")
    files = [("b.txt", tmp_path / "b.txt"), ("a.txt", tmp_path / "a.txt")]
    assert deterministic_zip(files) == deterministic_zip(list(reversed(files)))
    site = tmp_path / "site"
    (site / "js").mkdir(parents=True)
    (site / "js" / "x.min.js").write_text("var a=1;\n//# sourceMappingURL=x.min.js.map")
    (site / "js" / "x.min.js.map").write_text("{}")
    (site / "y.css").write_text("a{}\n/*# sourceMappingURL=y.css.map */\n")
    assert strip_source_maps(site) == 2
    assert not list(site.rglob("*.map"))
    assert "sourceMappingURL" not in (site / "js" / "x.min.js").read_text() + (site / "y.css").read_text()


@pytest.mark.parametrize("langs, kept", [
    (["en"], set()),
    (["de"], {"min/lunr.stemmer.support.min.js", "min/lunr.de.min.js"}),
    (["en", "th"], {"min/lunr.stemmer.support.min.js", "min/lunr.th.min.js", "wordcut.js", "min/lunr.multi.min.js"}),
])
def test_search_support_for_unused_languages_goes(tmp_path, langs, kept):
    """What the theme's search worker loads for the index's languages stays; the rest is deleted."""
    lunr = tmp_path / "assets" / "javascripts" / "lunr"
    names = ["tinyseg.js", "wordcut.js"] + [f"min/lunr.{n}.min.js" for n in ("de", "th", "multi", "stemmer.support")]
    for name in names:
        (lunr / name).parent.mkdir(parents=True, exist_ok=True)
        (lunr / name).write_text("x" * 10)
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "search_index.json").write_text(json.dumps({"config": {"lang": langs}, "docs": []}))
    assert strip_unused_search_languages(tmp_path) == 10 * (len(names) - len(kept))
    left = {p.relative_to(lunr).as_posix() for p in lunr.rglob("*.js")} if lunr.is_dir() else set()
    assert left == kept and (lunr.is_dir() or not kept)


def test_markup_passes_through_markdown_table_untouched():
    assert isinstance(markdown_table(pd.DataFrame([{"a": "<b>"}])), Markup)
    assert "&#60;b&#62;" in markdown_table(pd.DataFrame([{"a": "<b>"}]))
