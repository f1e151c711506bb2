"""Random-contrast images painted from a label map and a body mask only (SynthSeg-style domain randomisation).

No intensity table at all: every tissue class of a render (air, skin, subcutaneous fat, muscle wall, visceral fat,
soft tissue / bowel, vertebra shell and core, each organ, the kidneys' inner part) gets its own random mean and
spread in [0, 1], so across renders every organ is sometimes brighter and sometimes darker than its neighbours.
A network trained on them cannot rely on contrast and has to use shape and position: what any target modality
(MRI sequences, PET, CT) shares with the labelled source. Then a smooth multiplicative bias field (MRI coil
shading), a random gamma, blur (`blur_mm`) and Gaussian noise. Air stays the darkest class on average (all three
modalities have dark air), but its level is random too.

Optional ties (`ties`, `tie_probability`): a class may take, in a share of the renders, the mean of one of its
neighbours instead of its own, so that it can only be told apart by its shape and place (the duodenum looks like
the bowel on CT and like the pancreas on T1 MRI; with a mean of its own in every render, a network learns it by a
contrast no real scan has).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .body import KIDNEYS, _smooth_field, _vertebra, body_layers

SOFT_TISSUE, ORGAN = 5, 100   # tissue_classes: the soft tissue / bowel class; organ label k is class ORGAN + k


@dataclass(frozen=True)
class SynthRenderConfig:
    """Ranges of the random draws (intensities on a [0, 1] scale, lengths in mm)."""

    skin_mm: float = 2.0
    fat_mm: tuple[float, float] = (8.0, 25.0)
    muscle_mm: float = 12.0
    visceral_fat_fraction: float = 0.35
    air: tuple[float, float] = (0.0, 0.15)        # mean of the air class
    tissue: tuple[float, float] = (0.1, 1.0)      # mean of every other class
    spread: tuple[float, float] = (0.0, 0.06)     # per-class voxel sd
    kidney_core_probability: float = 0.6          # the kidneys' inner part (deeper than core_mm) its own class
    core_mm: float = 8.0
    texture_mm: float = 5.0                       # correlation length of the per-class voxel variation
    bias: float = 0.25                            # sd of the log bias field
    bias_mm: float = 80.0
    gamma_sd: float = 0.3                         # log-gamma sd
    blur_mm: tuple[float, float] = (0.0, 2.5)     # Gaussian sigma range (isotropic, mm)
    noise: tuple[float, float] = (0.0, 0.05)      # Gaussian noise sd
    ties: tuple[tuple[int, tuple[int, ...]], ...] = ()   # (class, its neighbour classes), each neighbour < class
    tie_probability: float = 0.0                  # chance a present tied class takes a present neighbour's mean

    def __post_init__(self) -> None:
        for name in ("fat_mm", "air", "tissue", "spread", "blur_mm", "noise"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if not 0 <= self.kidney_core_probability <= 1:
            raise ValueError("kidney_core_probability must be in [0, 1]")
        if not 0 <= self.tie_probability <= 1:
            raise ValueError(f"tie_probability must be in [0, 1], got {self.tie_probability}")
        for c, partners in self.ties:   # classes are drawn in increasing order: a neighbour's mean comes first
            if not partners or max(partners) >= c:
                raise ValueError(f"ties: class {c} needs neighbours drawn before it (smaller classes), got {partners}")


def tissue_classes(labels: np.ndarray, body: np.ndarray, spacing, rng: np.random.Generator,
                   config: SynthRenderConfig) -> np.ndarray:
    """int16 class map: 0 air, 1 skin, 2 subcutaneous fat, 3 muscle, 4 visceral fat, 5 soft tissue, 6 vertebra
    shell, 7 vertebra core, 100 + organ label, 200 + kidney label for the kidneys' inner part (when drawn)."""
    skin, fat, muscle, interior = body_layers(body, spacing, rng, config.skin_mm, config.fat_mm, config.muscle_mm)
    classes = np.zeros(labels.shape, dtype=np.int16)
    classes[skin], classes[fat], classes[muscle] = 1, 2, 3
    mix = _smooth_field(labels.shape, spacing, 12.0, rng)
    is_fat = mix < np.quantile(mix, config.visceral_fat_fraction)
    classes[interior] = np.where(is_fat[interior], 4, SOFT_TISSUE)
    shell, core = _vertebra(interior, labels, spacing, 18.0)
    classes[shell], classes[core] = 6, 7
    organs = labels > 0
    classes[organs] = ORGAN + labels[organs].astype(np.int16)
    if rng.uniform() < config.kidney_core_probability:
        for kidney in KIDNEYS:
            mask = labels == kidney
            if mask.any():
                classes[ndimage.distance_transform_edt(mask, sampling=spacing) > config.core_mm] = 200 + kidney
    return classes


def render_synth(labels: np.ndarray, body: np.ndarray, spacing_zyx, rng: np.random.Generator,
                 config: SynthRenderConfig = SynthRenderConfig()) -> tuple[np.ndarray, dict]:
    """(image float32 in about [0, 1], {class: mean drawn}). `labels` (uint8, FLARE numbering) and `body` (bool)
    in numpy (z, y, x) order of a frame whose axis 1 runs anterior -> posterior."""
    labels = np.asarray(labels)
    body = np.asarray(body, dtype=bool)
    if labels.shape != body.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and body mask {body.shape} must be the same 3D shape")
    spacing = tuple(float(s) for s in spacing_zyx)
    classes = tissue_classes(labels, body | (labels > 0), spacing, rng, config)
    texture = _smooth_field(labels.shape, spacing, config.texture_mm, rng)
    image = np.zeros(labels.shape, dtype=np.float32)
    means, ties = {}, dict(config.ties)
    for c in np.unique(classes).tolist():
        mean = rng.uniform(*(config.air if c == 0 else config.tissue))
        present = [n for n in ties.get(c, ()) if n in means]
        if present and config.tie_probability > 0 and rng.uniform() < config.tie_probability:
            mean = means[present[int(rng.integers(len(present)))]]
        mask = classes == c
        image[mask] = mean + rng.uniform(*config.spread) * texture[mask]
        means[int(c)] = round(float(mean), 3)
    if config.bias > 0:
        field = _smooth_field(labels.shape, spacing, config.bias_mm, rng)
        # centred: on a grid much smaller than bias_mm the unit-variance field is a near-constant offset far from 0
        # (exp overflows); the peak normalisation below makes the offset irrelevant on any other grid
        image *= np.exp(config.bias * (field - field.mean()))
    image = np.clip(image, 0.0, None)
    peak = float(image.max())
    if peak > 0:
        image = (image / peak) ** float(np.exp(rng.normal(0.0, config.gamma_sd)))
    sigma = rng.uniform(*config.blur_mm)
    if sigma > 0:
        image = ndimage.gaussian_filter(image, [sigma / s for s in spacing], mode="nearest")
    level = rng.uniform(*config.noise)
    if level > 0:
        image = image + rng.normal(0.0, level, image.shape).astype(np.float32)
    return image.astype(np.float32), means
