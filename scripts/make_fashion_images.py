"""Write the default gallery's input images from Fashion-MNIST's test set (run once; output committed).

One image per class: the first test image of each class. Usage:
    .venv/bin/python scripts/make_fashion_images.py images/fashion
"""

import sys
from pathlib import Path

from PIL import Image

from generator.models.embedded import FASHION_MNIST_CLASSES
from generator.devtools.train_demo import load_fashion_mnist


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




def perturbation_images(out: Path, index: int = 0) -> list[str]:
    """The same test garment shifted, shrunk and split (the models were trained on centred items)."""
    import numpy as np

    images, labels = load_fashion_mnist("test")
    garment = images[index]
    name = FASHION_MNIST_CLASSES[int(labels[index])].lower().replace(" ", "-")
    shifted = np.zeros_like(garment)
    shifted[:20, :20] = garment[4:24, 4:24]  # move the centre 20×20 to the top-left corner
    shrunk = np.zeros_like(garment)
    small = np.asarray(Image.fromarray(garment).resize((16, 16), Image.Resampling.LANCZOS))
    shrunk[6:22, 6:22] = small
    split = np.zeros_like(garment)
    split[:, :12] = garment[:, 2:14]  # left half pushed left, right half pushed right
    split[:, 16:] = garment[:, 14:26]
    rows = []
    for suffix, array, what in (("shifted", shifted, "centre 20×20 moved to the top-left corner"),
                                ("shrunk", shrunk, "scaled to 16×16, centred"),
                                ("split", split, "cut at column 14, halves pushed 2 px apart each")):
        file = f"p-{name}-{suffix}.png"
        Image.fromarray(array, mode="L").save(out / file, optimize=True)
        rows.append(f"| `{file}` | Fashion-MNIST test image #{index}, {what} |")
    return rows


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    print("\n".join(perturbation_images(Path(sys.argv[1]))))
