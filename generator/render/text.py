"""Words and numbers as readers see them: one place for number formats, plurals and class names.

Pure string helpers (no matplotlib): figures, captions, tables and pages all format through
here, so a rule ("never print -0", "1 window") holds everywhere at once.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

#: Significant digits when nothing needs separating.
DEFAULT_DIGITS = 3
#: The most significant digits :func:`distinct_digits` will use.
MAX_DIGITS = 8


def fmt_number(value: float, digits: int = DEFAULT_DIGITS) -> str:
    """A number with ``digits`` significant digits, never ``-0`` and never ``nan`` silently.

    Args:
        value: any real number.
        digits: significant digits (>= 1).

    Returns:
        Plain notation for 1e-4 <= |value| < 1e6, otherwise scientific; "0" for zero and for
        values below 1e-(digits + 8).

    >>> fmt_number(0.00712345), fmt_number(-0.0000001), fmt_number(1234.5, 2), fmt_number(-1e-20)
    ('0.00712', '-1.00e-07', '1200', '0')
    """
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    digits = max(1, int(digits))
    if value == 0 or abs(value) < 10.0 ** (-(digits + 8)):
        return "0"
    magnitude = abs(value)
    if 1e-4 <= magnitude < 1e6:
        exponent = math.floor(math.log10(magnitude))
        decimals = max(0, digits - 1 - exponent)
        text = f"{value:.{decimals}f}"
        if decimals == 0 and magnitude >= 10 ** digits:  # 1234.5 at 2 digits → 1200
            text = f"{round(value, -(exponent - digits + 1)):.0f}"
    else:
        text = f"{value:.{digits - 1}e}"
    return _no_negative_zero(text)


def _no_negative_zero(text: str) -> str:
    """'-0', '-0.00', '-0e+00' → without the sign."""
    if text.startswith("-") and not any(c in "123456789" for c in text.split("e")[0]):
        return text[1:]
    return text


def fmt_fixed(value: float, decimals: int) -> str:
    """A number with a fixed count of decimals (aligned tick labels), never ``-0``."""
    return _no_negative_zero(f"{float(value):.{max(0, int(decimals))}f}")


def distinct_digits(values: Iterable[float], digits: int = DEFAULT_DIGITS, max_digits: int = MAX_DIGITS) -> int:
    """The fewest significant digits (>= ``digits``) at which different values print differently.

    A ranking printed at this precision never shows two ranked items with the same number
    unless they are equal to ``max_digits`` digits.
    """
    distinct = sorted({float(v) for v in values if v is not None and not math.isnan(float(v))})
    for d in range(digits, max_digits + 1):
        if len({fmt_number(v, d) for v in distinct}) == len(distinct):
            return d
    return max_digits


def fmt_column(values: list[float], digits: int = DEFAULT_DIGITS) -> list[str]:
    """Format a column of numbers at one precision, high enough to tell its values apart."""
    d = distinct_digits(values, digits)
    return [fmt_number(v, d) for v in values]


def fmt_pct(p: float, decimals: int = 1) -> str:
    """A probability in [0, 1] as a percentage: ``0.9812`` → ``98.1%`` (never ``-0.0%``)."""
    return _no_negative_zero(f"{100.0 * float(p):.{decimals}f}") + "%"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 window``, ``4 windows``, ``0 windows``.

    >>> plural(1, "window"), plural(4, "window"), plural(2, "patch", "patches")
    ('1 window', '4 windows', '2 patches')
    """
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def short_class_name(name: str) -> str:
    """A class's first name, for tight places (figure titles): ``worm fence, snake fence`` → ``worm fence``.

    Captions and tables use the full name.
    """
    first = str(name).split(",")[0].strip()
    return first or str(name)


def label_matches(known: str, class_name: str, class_index: int | None = None) -> bool:
    """Whether a known label names a model's class.

    The label matches the whole class name or one of its comma-separated synonyms, ignoring
    case and punctuation (a folder named ``t-shirt-top`` names ``T-shirt/top``). A label of
    digits names the class index instead, unless the class names are digits themselves.

    >>> label_matches("tabby", "tabby, tabby cat"), label_matches("t-shirt-top", "T-shirt/top"), label_matches("cat", "tabby")
    (True, True, False)
    >>> label_matches("7", "Sneaker", 7), label_matches("7", "3", 7)
    (True, False)
    """
    k = _label_key(known)
    if k.isdigit() and class_index is not None and not _label_key(class_name).isdigit():
        return int(k) == int(class_index)
    return any(k == _label_key(n) for n in [class_name, *class_name.split(",")])


def _label_key(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "-", unicodedata.normalize("NFKD", str(text)).casefold()).strip("-")


def decimals_to_separate(values: Sequence[float], minimum: int = 3, maximum: int = 6) -> int:
    """The fewest decimals (≥ ``minimum``) at which values that differ at ``maximum`` decimals print apart."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    distinct = len({round(v, maximum) + 0.0 for v in finite})
    for d in range(minimum, maximum + 1):
        if len({round(v, d) + 0.0 for v in finite}) == distinct:
            return d
    return maximum


def format_number(value: float | None, decimals: int = 3) -> str:
    """The one number format of the faithfulness tables: fixed decimals, never "-0" (e.g. "-0.000" → "0.000")."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{float(value):.{decimals}f}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return text
