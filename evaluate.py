"""Evaluate a trained CVAE: test ELBO, importance-weighted NLL, conditional accuracy, figures.

    python evaluate.py --model saved_models/fashion_mnist-mlp/1 --dataset fashion_mnist
    python evaluate.py --model runs/fashion_mnist-mlp --iw-samples 1000 --output eval/
    python evaluate.py --model runs/mlp --compare runs/conv --dataset fashion_mnist

See `python evaluate.py --help` for every flag.
"""

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from keras_cvae.cli.evaluate import main as evaluate_main

    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
