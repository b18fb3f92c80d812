"""Pages say nothing about how a model behaves unless a rule in generator/analysis/findings.py made it.

Three levels: the scanner itself; every template's own prose (no build); and the pages of the shared
tiny gallery, which has every section and chapter on (set ``VIT_GALLERY_DOCS`` to the docs folder of
a build of gallery.toml to scan that instead).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import generator.analysis.findings as fi
from generator.site.pages import make_environment

from .behaviour_scan import unmarked_behaviour
from .conftest import ROOT


def _finding_html(f) -> str:
    env = make_environment()
    return env.from_string('{% from "_findings.md.j2" import finding %}{{ finding(f) }}').render(f=f)


def test_scanner_flags_prose_and_ignores_rule_made_sentences():
    prose = "In this model the first blocks attend by position, much as the study saw.\n"
    assert unmarked_behaviour(prose)
    marked = f'- <span class="finding" data-claim="x">{prose.strip()}</span>\n'
    assert unmarked_behaviour(marked) == []
    assert unmarked_behaviour("Rollout multiplies the blocks' head-fused attention.") == []
    assert unmarked_behaviour("{% if x %}The last blocks become sparse.{% endif %}", template=True)


@pytest.mark.parametrize("delta, verdict", [(+1e-6, "Supported"), (-1e-6, "Contradicted")])
def test_a_rule_sentence_flips_on_the_page_at_its_threshold(delta, verdict):
    f = fi.later_blocks_alike([0.1, 0.2, 0.3, fi.LATE_SIMILARITY_MIN + delta, fi.LATE_SIMILARITY_MIN + delta])
    html = _finding_html(f)
    assert html.startswith('<span class="finding" data-claim="vit_later_blocks_alike"')
    assert f'data-verdict="{verdict.lower()}"' in html and f"**{verdict}.**" in html
    assert ("as the study saw" in html) == (verdict == "Supported")
    assert ("do not attend alike" in html) == (verdict == "Contradicted")
    assert unmarked_behaviour(html) == []
    assert unmarked_behaviour(f.sentence)  # the same sentence outside its span would be caught


def test_templates_state_no_model_behaviour_of_their_own():
    hits = {}
    for path in sorted((ROOT / "templates").rglob("*.j2")):
        found = unmarked_behaviour(path.read_text(encoding="utf-8"), template=True)
        if found:
            hits[str(path.relative_to(ROOT))] = found
    assert hits == {}


def test_gallery_pages_have_no_unmarked_behaviour_sentences(request):
    """Every page of a built gallery: the shared tiny gallery (every section and chapter on), or the docs
    folder that ``VIT_GALLERY_DOCS`` names (``make site``'s ``build/docs`` for the default gallery)."""
    docs = os.environ.get("VIT_GALLERY_DOCS")
    if docs:
        docs_dir = Path(docs)
    else:
        from generator.config.loading import load_config

        docs_dir = load_config(request.getfixturevalue("built_gallery").config).output / "docs"
    pages = sorted(docs_dir.rglob("*.md"))
    assert any(p.name == "claims.md" for p in pages) and any(p.name == "attention-statistics.md" for p in pages)
    hits = {str(p.relative_to(docs_dir)): h for p in pages if (h := unmarked_behaviour(p.read_text(encoding="utf-8")))}
    assert hits == {}
    claims = (docs_dir / "chapters" / "claims.md").read_text(encoding="utf-8")
    for claim in fi.study_claims():
        assert f'data-claim="{claim.claim_id}"' in claims
    # the scan reads rule-made sentences: there are some, so the pages were not scanned empty
    assert sum(p.read_text(encoding="utf-8").count('<span class="finding') for p in pages) > 0
