"""M1's features for M2 (Kingma et al. 2014's M1 + M2): a trained VAE's posterior means E_q[z | x]
of a data set's images, written as a Keras-style .npz that benchmarks/semi_supervised.py reads.

    python benchmarks/latent_features.py --model benchmarks/results/long_run/vampprior/run/model.keras \
        --output data/fashion_vampprior_latent.npz
    python benchmarks/semi_supervised.py --dataset fashion_vampprior_latent \
        --data-dir data/fashion_vampprior_latent.npz --likelihood gaussian --labeled 100 --output S

Keeps the VAE's active units only (Burda et al. 2016: the variance of E_q[z_u] over the training
images above 0.01; the others are the prior's noise, the same for every image). The library's
pipeline reads 8-bit images, so each unit becomes one pixel of a one-row image: scaled to [0, 1]
between its 0.5th and 99.5th percentiles over the training images, clipped, in 256 levels (a step
of under a hundredth of that range, where a unit's posterior standard deviation is typically a
tenth or more). The labels are the data set's own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RANGE_PERCENTILES = (0.5, 99.5)  # the span of a unit scaled to [0, 1]; the tails beyond are clipped


def posterior_means(backend, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """E_q[z | x, c] of every image [N, L], for 8-bit images [N, H, W, C] and their condition rows,
    from a model behind `estimators.KerasBackend`."""
    from keras_cvae.evaluation.estimators import posterior_moments

    return posterior_moments(backend, images.astype("float32") / 255.0, labels)[0]


def as_images(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The active units of training and test means [N, L] as 8-bit one-row images [N, 1, A], and
    which units those are (a boolean mask over L)."""
    from keras_cvae.evaluation.estimators import ACTIVE_UNIT_THRESHOLD

    active = np.var(train, axis=0) > ACTIVE_UNIT_THRESHOLD
    if not active.any():
        raise ValueError("the model has no active latent unit: its q(z | x) means are the same for every image")
    low, high = np.percentile(train[:, active], RANGE_PERCENTILES, axis=0)

    def scaled(means: np.ndarray) -> np.ndarray:
        unit = np.clip((means[:, active] - low) / (high - low), 0.0, 1.0)
        return np.round(unit * 255.0).astype(np.uint8)[:, None, :]

    return scaled(train), scaled(test), active


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained plain VAE's .keras file")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--output", required=True, help="the .npz to write")
    args = parser.parse_args(argv)

    import keras

    from keras_cvae.atomic import atomic_path
    from keras_cvae.data import load_dataset
    from keras_cvae.evaluation.estimators import KerasBackend
    from keras_cvae.models.cvae import CVAE  # also registers every class a keras_cvae file names

    model = keras.saving.load_model(args.model, safe_mode=True)
    if not isinstance(model, CVAE) or model.conditional:
        parser.error(f"--model {args.model}: not a plain VAE (M1 has no condition)")
    dataset = load_dataset(args.dataset, args.data_dir)
    print(f"Encoding {len(dataset.x_train):,} training and {len(dataset.x_test):,} test images with {args.model}",
          flush=True)
    backend = KerasBackend(model)  # one compiled encoder for both splits
    train, test, active = as_images(posterior_means(backend, dataset.x_train, dataset.y_train),
                                    posterior_means(backend, dataset.x_test, dataset.y_test))
    labels = {"y_train": dataset.y_train[:, 0].astype(np.uint8), "y_test": dataset.y_test[:, 0].astype(np.uint8)}
    with atomic_path(args.output) as path:
        np.savez(path, x_train=train, x_test=test, **labels)
    print(f"{args.output}: {int(active.sum())} active units of {model.latent_dim}, one-row images {train.shape[1:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
