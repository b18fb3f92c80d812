"""Stand-in weights for a config's hub models, for machines without the Hugging Face hub.

For every ``weights = "hub"`` model of CONFIG this saves timm's random initialisation of its
architecture (the ``name.tag`` as written, so the tag's head size and pretrained config apply)
as ``OUT/<arch>.safetensors``, and writes ``OUT/<config name>``: the same config with
``weights = "file:..."`` for those models and its relative paths made absolute. The results
explain random weights; use it to try the pipeline and to time it, not to read the figures.

    python scripts/local_weights.py configs/report-cpu.toml /tmp/study-weights
    python -m generator build --config /tmp/study-weights/report-cpu.toml
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_ASSIGN = re.compile(r'^(?P<key>images|output|site_dir|data_root)\s*=\s*"(?P<value>[^"]*)"', re.MULTILINE)


def rewrite_config(text: str, base: Path, weights: dict[str, Path], **replace: str) -> str:
    """``text`` with hub weights replaced by ``weights[arch]`` files and paths made absolute against ``base``.

    Args:
        replace: top-level string keys (``output``, ``site_dir``, ``images``) to set instead.
    """
    def absolute(match: re.Match) -> str:
        key, value = match["key"], match["value"]
        if key in replace:
            return f'{key} = "{replace[key]}"'
        return f'{key} = "{(base / value).resolve() if not Path(value).is_absolute() else value}"'

    text = _ASSIGN.sub(absolute, text)
    out, arch = [], None
    for line in text.splitlines():
        found = re.match(r'\s*arch\s*=\s*"([^"]+)"', line)
        if found:
            arch = found[1]
        if re.match(r'\s*weights\s*=\s*"hub"', line) and arch in weights:
            line = f'weights = "file:{weights[arch]}"'
        out.append(line)
    return "\n".join(out) + "\n"


def save_random_weights(arch: str, path: Path) -> Path:
    """timm's seeded random initialisation of ``arch`` (``name`` or ``name.tag``) as a safetensors file."""
    import timm
    import torch
    from safetensors.torch import save_file

    if not path.is_file():
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def main(config: Path, out: Path) -> Path:
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    weights = {m["arch"]: save_random_weights(m["arch"], out / f"{m['arch']}.safetensors")
               for m in data.get("models", []) if m.get("weights", "hub") == "hub"}
    target = out / config.name
    target.write_text(rewrite_config(config.read_text(encoding="utf-8"), config.parent, weights), encoding="utf-8")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(main(Path(sys.argv[1]), Path(sys.argv[2])))
