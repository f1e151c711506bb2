"""One render of a labelled case in the canonical frame (numpy only): the body extended above and below the
labelled slices, then painted. `cases.py` reads and writes the files around it; `training/inplane/packed.py` calls
it on volumes in memory (a machine without SimpleITK)."""
from __future__ import annotations

import hashlib

import numpy as np


def case_seed(seed: int, case: str) -> int:
    """The generator seed of one render: from (seed, case name), so a case renders the same whatever else is
    rendered with it."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{case}".encode()).digest()[:8], "little")


def extend_body(body: np.ndarray, extension: np.ndarray) -> np.ndarray:
    """The body mask (z, y, x) continued into the extension slices (whole slices along axis 0 outside the
    labelled range) as a copy of the outermost labelled slice on that side whose body is at least half the median
    body area (the scan's edge slices are often partial)."""
    ext = extension.all(axis=(1, 2))
    kept = np.flatnonzero(~ext)
    if not ext.any() or not len(kept):
        return body
    area = body[kept].sum(axis=(1, 2))
    good = kept[area >= 0.5 * np.median(area)] if area.any() else kept
    out = body.copy()
    for z in np.flatnonzero(ext):
        src = good[0] if z < kept[0] else good[-1]
        out[z] = body[src]
    return out


def render_canonical(labels: np.ndarray, body: np.ndarray, spacing_zyx, stem: str, seed: int,
                     pad_mm: tuple[float, float], paint) -> tuple[np.ndarray, np.ndarray, dict, list[int]]:
    """Render `stem` from its label map and body mask (canonical (z, y, x), axis 0 along physical z) through
    `paint(labels, body, spacing, rng, extension) -> (image, drawn)`: first `pads` slices are added before and
    after (each drawn in `pad_mm`, no organs there, the body continued), so the result has more slices than the
    label map. Returns (image float32, padded labels, what was drawn, pads)."""
    rng = np.random.default_rng(case_seed(seed, stem))
    pads = [int(round(rng.uniform(*pad_mm) / float(spacing_zyx[0]))) for _ in range(2)]
    width = ((pads[0], pads[1]), (0, 0), (0, 0))
    labels = np.pad(np.asarray(labels), width)
    extension = np.ones(labels.shape, dtype=bool)
    extension[pads[0]:labels.shape[0] - pads[1]] = False
    body = extend_body(np.pad(np.asarray(body, dtype=bool), width), extension)
    image, drawn = paint(labels, body, tuple(float(s) for s in spacing_zyx), rng, extension)
    return image.astype(np.float32), labels, drawn, pads
