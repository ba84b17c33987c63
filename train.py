"""Train a conditional VAE.

    python train.py --dataset fashion_mnist --epochs 10
    python train.py --dataset mnist --data-dir ~/data/mnist --arch conv --latent-dim 2
    python train.py --dataset fashion_mnist --epochs 20 --resume   # continue runs/fashion_mnist-mlp

See `python train.py --help` for every flag.
"""

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from keras_cvae.cli.train import main as train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
