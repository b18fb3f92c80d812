"""Jobs that are skipped rather than failed: their input is missing for a reason outside the tool.

A probe dataset that has not been downloaded is the case in point: the study's config names three
datasets that a clone does not hold. Such a job is reported as skipped, with how to get what it
needs; it does not make the run fail unless the user asks for ``--strict``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..render.text import plural

__all__ = ["JobSkipped", "Skip"]


class JobSkipped(Exception):
    """Raised by a job whose input is absent (not broken); the message says how to get it."""


@dataclass
class Skip:
    """One skipped job: where, and why (with how to fix it)."""

    section: str
    model: str
    unit: str
    reason: str




def skip_lines(skipped: list[Skip]) -> list[str]:
    """One summary line per skipped input (a missing dataset), naming the models it was skipped for."""
    lines = []
    by_reason: dict[tuple[str, str], list[str]] = {}
    for skip in skipped:
        by_reason.setdefault((skip.section, skip.reason), []).append(skip.model)
    for (section, reason), models in by_reason.items():
        lines.append(f"  [{section}] {reason} (skipped for {', '.join(models)})")
    return ([f"{plural(len(skipped), 'job')} skipped (their input is missing; --strict counts them as failures):"]
            + lines) if skipped else []
