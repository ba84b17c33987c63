"""Distances between two sets of images in a feature space: the Fréchet distance (FID, Heusel et
al. 2017) and the kernel distance (KID, Bińkowski et al. 2018), computed on the reference
classifier's penultimate features (`ReferenceClassifier.features`) rather than Inception's:
Inception was trained on ImageNet photographs and is not shipped offline, while the reference
classifier was trained on the dataset itself. The figures compare models on one dataset; they are
not comparable with published Inception FIDs.

Both are biased by the sample size, so every figure states how many images it used.
"""

from __future__ import annotations

import numpy as np

KID_SUBSET_SIZE = 1000
KID_SUBSETS = 10


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½) of two feature sets [N, D] (float64).

    Tr((Σ_r Σ_f)^½) is the sum of the square roots of the eigenvalues of Σ_r^½ Σ_f Σ_r^½ (a
    symmetric PSD matrix with the same eigenvalues as Σ_r Σ_f), computed with `eigh` alone.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    mean_r, mean_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    values, vectors = np.linalg.eigh(cov_r)
    root_r = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product = np.linalg.eigvalsh(root_r @ cov_f @ root_r)
    trace_root = np.sum(np.sqrt(np.clip(product, 0.0, None)))
    distance = np.sum((mean_r - mean_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2.0 * trace_root
    return float(max(distance, 0.0))


def kernel_distance(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator,
                    subset_size: int = KID_SUBSET_SIZE, subsets: int = KID_SUBSETS) -> float:
    """The unbiased estimate of MMD² with the kernel k(a, b) = (a·b / D + 1)³, averaged over
    `subsets` random subsets of `subset_size` images from each set (fewer when a set is smaller)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    size = min(subset_size, len(real), len(fake))
    dim = real.shape[1]
    estimates = []
    for _ in range(subsets):
        a = real[rng.choice(len(real), size, replace=False)]
        b = fake[rng.choice(len(fake), size, replace=False)]
        k_aa, k_bb, k_ab = ((x @ y.T / dim + 1.0) ** 3 for x, y in ((a, a), (b, b), (a, b)))
        off_diagonal = size * (size - 1)
        estimates.append((k_aa.sum() - np.trace(k_aa)) / off_diagonal + (k_bb.sum() - np.trace(k_bb)) / off_diagonal
                         - 2.0 * k_ab.mean())
    return float(np.mean(estimates))
