"""Finding model-behaviour sentences that no rule made, in Markdown pages or templates.

Rule-made sentences are printed through ``templates/_findings.md.j2``, which wraps each in a
``<span class="finding …">``; the claims chapter quotes the study's observations (attributed, to be
tested) in ``<span class="study-claim">``. Everything outside such spans must not say how a model
behaves.
The patterns below are phrasings of the study's observations and of verdicts on them.
"""

from __future__ import annotations

import re

#: A rule-made sentence (no nested spans inside: the macros print plain sentences).
FINDING_SPAN = re.compile(r'<span class="(finding|study-claim)[^"]*"[^>]*>.*?</span>', re.DOTALL)
_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)

BEHAVIOUR = [re.compile(p, re.IGNORECASE) for p in (
    r"\b(early|earlier|first|initial|later|late|last|deeper|final|subsequent)\s+(encoder\s+)?(blocks?|layers?|encoders?|heads?)"
    r"\s+(\w+\s+){0,2}(attend|split|focus|look|become|turn|show|draw|exhibit|follow|perform)",
    r"\btends? to (attend|focus|look)",
    r"\battends? (mostly |mainly |primarily |largely )?(by|to) (position|content|objects?|features|the cent(re|er))",
    r"\b(grows?|gets?|becomes?|turns?) (more |increasingly )?(sparse|sparser|alike|similar|positional)\b",
    r"\battend alike\b",
    r"\bmean fusion (gives|is|beats|produces|tends|works)",
    r"\b(more|less) faithful than\b",
    r"\b(the )?models? (all )?(tend to )?(focus|look|attend|agree) on\b",
    r"\bsuppressed to\b",
    r"\b(as|like|unlike|contrary to|against) the study('s)? (saw|found|finds|reports?|describes|notes|impression|suggests)",
    r"\bmuch as the study\b",
    r"\bdoes not recognise\b",
    r"\bsanity check failed\b",
    r"\bis due to placement\b",
)]


def unmarked_behaviour(text: str, *, template: bool = False) -> list[str]:
    """Lines of ``text`` (Markdown, or a Jinja2 template when ``template``) that state model
    behaviour outside a rule-made span."""
    text = FINDING_SPAN.sub(" ", text)
    if template:
        text = _JINJA.sub(" ", text)
    hits = []
    for line in text.splitlines():
        plain = line.replace("\\", "")
        if any(p.search(plain) for p in BEHAVIOUR):
            hits.append(line.strip())
    return hits
