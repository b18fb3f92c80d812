"""Write the default gallery's input images from Fashion-MNIST's test set (run once; output committed).

One image per class: the first test image of each class. Usage:
    .venv/bin/python scripts/make_fashion_images.py images/fashion
"""

import sys
from pathlib import Path

from PIL import Image

from generator.embedded import FASHION_MNIST_CLASSES
from generator.train_demo import load_fashion_mnist


def main(out: Path) -> None:
    images, labels = load_fashion_mnist("test")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cls, name in enumerate(FASHION_MNIST_CLASSES):
        index = int((labels == cls).nonzero()[0][0])
        slug = name.lower().replace("/", "-").replace(" ", "-")
        file = f"{cls}-{slug}.png"
        Image.fromarray(images[index], mode="L").save(out / file, optimize=True)
        rows.append(f"| `{file}` | Fashion-MNIST test image #{index} ({name}) |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
