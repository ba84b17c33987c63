"""The image-completion task of Sohn et al. (2015): see some quadrants, predict the rest.

The condition x is the image with its missing quadrants set to MASK_VALUE; the target y is the
missing pixels. The visible quadrants follow the order of Pyro's reproduction: 1 shows the
bottom-left quadrant, 2 adds the top-left, 3 adds the top-right; the bottom-right is always
missing. MASK_VALUE is −1, outside the pixel range [0, 1], so a masked pixel cannot be
confused with a black one.
"""

from __future__ import annotations

import numpy as np

from keras_cvae.config import QUADRANT_COUNTS

MASK_VALUE = -1.0
# (row half, column half) of each visible quadrant, in the order they are revealed.
VISIBLE_ORDER = ((1, 0), (0, 0), (0, 1))  # bottom-left, top-left, top-right


def visible_mask(image_shape: tuple[int, ...], quadrants: int) -> np.ndarray:
    """float32 [H, W, C]: 1 where the pixel is visible (part of x), 0 where it is missing (y)."""
    if quadrants not in QUADRANT_COUNTS:
        raise ValueError(f"quadrants must be one of {QUADRANT_COUNTS}, got {quadrants!r}")
    height, width, channels = image_shape
    mask = np.zeros((height, width, channels), np.float32)
    rows = (slice(0, height // 2), slice(height // 2, height))
    cols = (slice(0, width // 2), slice(width // 2, width))
    for row, col in VISIBLE_ORDER[:quadrants]:
        mask[rows[row], cols[col]] = 1.0
    return mask


def masked_input(images, visible):
    """x: the images where `visible` is 1, MASK_VALUE elsewhere (works on numpy and TF tensors)."""
    return images * visible + MASK_VALUE * (1.0 - visible)
