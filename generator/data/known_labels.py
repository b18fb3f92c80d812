"""Known labels of the images, for the home page's "correct?" column.

The one mechanism is explicit: an optional ``labels.csv`` in the image folder, UTF-8, with a
header row ``file,label`` and one row per image file name::

    file,label
    0-t-shirt-top.png,T-shirt/top
    9-ankle-boot.png,Ankle boot

File names are never guessed from (``1-trouser.png`` says nothing by itself). A model's top-1
class matches a known label when the label equals the class name or one of its
comma-separated synonyms, ignoring case (:func:`generator.render.text.label_matches`):
``tabby`` matches ImageNet's ``tabby, tabby cat``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

LABELS_FILE = "labels.csv"


@dataclass
class KnownLabels:
    """File name → label, and what was wrong with the file (shown on the home page)."""

    labels: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    source: Path | None = None


def read_known_labels(folder: Path) -> KnownLabels:
    """Read ``folder/labels.csv`` when it exists. A malformed file yields problems, never an exception."""
    path = folder / LABELS_FILE
    if not path.is_file():
        return KnownLabels()
    out = KnownLabels(source=path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "label"} <= {f.strip() for f in reader.fieldnames}:
                out.problems.append(f"{LABELS_FILE} needs a header row 'file,label'")
                return out
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                if not row.get("file") or not row.get("label"):
                    out.problems.append(f"{LABELS_FILE} line {line}: empty file or label")
                elif row["file"] in out.labels and out.labels[row["file"]] != row["label"]:
                    out.problems.append(f"{LABELS_FILE} line {line}: {row['file']} labelled twice")
                else:
                    out.labels[row["file"]] = row["label"]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        out.problems.append(f"{LABELS_FILE} could not be read: {exc}")
    return out
