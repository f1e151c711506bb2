"""Mirror test-time augmentation: which flips to run, and averaging logits over them."""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

from .config import TTA


def flip_sets(tta: TTA) -> list[tuple[int, ...]]:
    """Spatial axes (0=z, 1=y, 2=x) to flip for each pass; the first pass is always the identity ()."""
    axes = tuple(sorted(tta.axes))
    if not axes:
        return [()]
    if tta.mode == "joint":
        return [(), axes]
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def mirrored_mean(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, flips: list[tuple[int, ...]]) -> np.ndarray:
    """Mean logits over mirrored passes; `x` is (1, 1, z, y, x), `predict` returns (C, z, y, x)."""
    total = None
    for axes in flips:
        if axes:
            xin = np.ascontiguousarray(np.flip(x, tuple(a + 2 for a in axes)))
            y = np.flip(predict(xin), tuple(a + 1 for a in axes))
        else:
            y = predict(x)
        total = y.astype(np.float32, copy=True) if total is None else total + y
    total /= len(flips)
    return total
