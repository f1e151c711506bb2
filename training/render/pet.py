"""FDG-PET-like uptake images painted from a label map and a body mask only (domain randomisation).

A second labelled source for PET next to the CycleGAN's synthetic PET: `render_pet` never sees a PET or MRI
intensity. Its inputs are the FLARE-numbered label map, a binary body mask and the voxel spacing; every uptake value
is drawn per case from the ranges in `PetRenderConfig` (typical adult FDG SUVs), so a network trained on many
renders learns organ shape, position and *relative* uptake rather than one intensity table:

* zero activity outside the body; skin, subcutaneous fat, muscle wall, visceral fat / bowel mixture and a vertebra
  (red marrow) laid out by `training.render.body`;
* organs: liver, spleen (a fraction of the liver), kidney parenchyma and, in most cases, a hot collecting system
  (excreted FDG in urine), blood pool (aorta, IVC) below the liver, the other FLARE organs at their typical SUVs;
* optionally a heart above the liver dome (hot myocardium around the blood pool, label 0), and hot
  structures that are not organs: large ellipsoids like brain or bladder, small ones like
  bowel, lymph nodes or lesions; with `pad_mm` the body is extended above and below the labelled field of view (no
  organs there) and the large hot structures go there first, so that the whole-body scans of the engine's
  coarse stage do not look like nothing it has seen;
* multiplicative low-frequency texture, the scanner's resolution (Gaussian PSF, `psf_fwhm_mm`) and
  count-dependent, spatially correlated noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .body import KIDNEYS, _smooth_field, _vertebra, body_layers

# FLARE label -> SUV range (uniform draw per case); liver-relative organs are in RELATIVE_TO_LIVER instead
ORGAN_SUV: dict[int, tuple[float, float]] = {
    1: (1.6, 3.0),     # liver
    2: (1.8, 4.0),     # right kidney parenchyma
    4: (1.2, 2.2),     # pancreas
    7: (1.2, 2.2),     # right adrenal
    8: (1.2, 2.2),     # left adrenal
    9: (0.3, 0.8),     # gallbladder (bile)
    10: (1.2, 2.5),    # esophagus
    11: (1.2, 3.5),    # stomach
    12: (1.2, 3.0),    # duodenum
    13: (1.8, 4.0),    # left kidney parenchyma
}
RELATIVE_TO_LIVER: dict[int, tuple[float, float]] = {3: (0.65, 1.0), 5: (0.6, 0.9), 6: (0.6, 0.9)}  # spleen, blood


@dataclass(frozen=True)
class PetRenderConfig:
    """What `render_pet` paints; lengths in mm, intensities in SUV (g/ml)."""

    skin_mm: float = 2.0
    fat_mm: tuple[float, float] = (8.0, 25.0)
    muscle_mm: float = 12.0
    fat_suv: tuple[float, float] = (0.2, 0.45)
    muscle_suv: tuple[float, float] = (0.5, 0.9)
    skin_suv: tuple[float, float] = (0.5, 1.0)
    soft_tissue_suv: tuple[float, float] = (0.7, 1.5)   # bowel / soft tissue inside the abdomen
    visceral_fat_suv: tuple[float, float] = (0.4, 0.7)  # visceral fat with the bowel it holds (partial volume)
    visceral_fat_fraction: float = 0.35
    marrow_suv: tuple[float, float] = (1.2, 2.2)
    urine_probability: float = 0.75       # a hot collecting system in the kidneys
    urine_suv: tuple[float, float] = (4.0, 20.0)
    pelvis_mm: float = 8.0                # kidney voxels deeper than this are the collecting system
    large_hot: tuple[int, int] = (1, 3)   # brain / heart / bladder-like structures (not organs)
    large_hot_radius_mm: tuple[float, float] = (35.0, 75.0)
    large_hot_suv: tuple[float, float] = (5.0, 15.0)
    small_hot: tuple[int, int] = (1, 6)   # bowel / node / lesion-like spots
    small_hot_radius_mm: tuple[float, float] = (5.0, 18.0)
    small_hot_suv: tuple[float, float] = (3.0, 12.0)
    # a heart just above the liver dome: hot myocardium around the blood pool. Off by default: with 0.8 the same CPU
    # budget gave a worse model (benchmarks/results/uda-cpu-pet-render); 0 draws nothing (renders as without it)
    heart_probability: float = 0.0
    heart_radius_mm: tuple[float, float] = (40.0, 60.0)
    heart_offset_mm: tuple[float, float] = (10.0, 50.0)   # centre above the liver's top slice
    heart_suv: tuple[float, float] = (3.0, 15.0)
    heart_wall_mm: tuple[float, float] = (8.0, 15.0)
    pad_mm: tuple[float, float] = (0.0, 0.0)   # (min, max) body extension above and below the labels (render_pet_case)
    texture: float = 0.12                 # sd of the multiplicative texture
    texture_mm: float = 10.0
    psf_fwhm_mm: tuple[float, float] = (5.0, 9.0)
    noise: tuple[float, float] = (0.08, 0.25)   # noise sd relative to sqrt(SUV) (count statistics)
    noise_mm: float = 3.0                 # noise correlation length (reconstruction smooths it)

    def __post_init__(self) -> None:
        for name in ("fat_suv", "muscle_suv", "skin_suv", "soft_tissue_suv", "visceral_fat_suv", "marrow_suv", "urine_suv",
                     "large_hot_radius_mm", "large_hot_suv", "small_hot_radius_mm", "small_hot_suv", "pad_mm",
                     "psf_fwhm_mm", "noise", "large_hot", "small_hot", "fat_mm", "heart_radius_mm",
                     "heart_offset_mm", "heart_suv", "heart_wall_mm"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if not (0 <= self.urine_probability <= 1 and 0 <= self.heart_probability <= 1):
            raise ValueError("urine_probability and heart_probability must be in [0, 1]")


def _ellipsoid_at(centre, radii_mm, spacing, shape) -> tuple[tuple[slice, ...], np.ndarray]:
    """(box slices, boolean mask within the box) of an axis-aligned ellipsoid around `centre` (voxels)."""
    half = [int(np.ceil(r / s)) for r, s in zip(radii_mm, spacing, strict=True)]
    box = tuple(slice(max(0, int(c) - h), min(n, int(c) + h + 1)) for c, h, n in zip(centre, half, shape, strict=True))
    grids = np.ogrid[tuple(slice(b.start, b.stop) for b in box)]
    d = sum(((g - c) * s / r) ** 2 for g, c, s, r in zip(grids, centre, spacing, radii_mm, strict=True))
    return box, d <= 1.0


def _hot_spots(suv: np.ndarray, free: np.ndarray, preferred: np.ndarray, spacing, rng: np.random.Generator,
               count: tuple[int, int], radius_mm: tuple[float, float], value: tuple[float, float]) -> int:
    """Paint `count` hot ellipsoids into `free` voxels (centres in `preferred` when it has any); returns how many."""
    n = int(rng.integers(count[0], count[1] + 1))
    pool = np.argwhere(preferred) if preferred.any() else np.argwhere(free)
    if not len(pool):
        return 0
    for _ in range(n):
        centre = pool[rng.integers(len(pool))]
        radii = [rng.uniform(*radius_mm) * rng.uniform(0.7, 1.0) for _ in range(3)]
        box, mask = _ellipsoid_at(centre, radii, spacing, suv.shape)
        mask &= free[box]
        suv[box][mask] = rng.uniform(*value)
    return n


def _heart(suv: np.ndarray, free: np.ndarray, labels: np.ndarray, body: np.ndarray, spacing,
           rng: np.random.Generator, config: PetRenderConfig) -> dict:
    """Paint a heart into `free` voxels: an ellipsoid centred `heart_offset_mm` above the liver's top slice (axis 0
    runs towards the head in the canonical LPS frame), left of and anterior to the body's centre there; a hot
    myocardial wall `heart_wall_mm` thick around a blood pool. FDG uptake of the myocardium varies widely, hence
    the wide range. Returns what was drawn."""
    u = rng.uniform
    top = int(np.flatnonzero((labels == 1).any(axis=(1, 2))).max())
    cz = top + u(*config.heart_offset_mm) / spacing[0]
    ref = body[top] if body[top].any() else body.any(axis=0)
    ys, xs = np.nonzero(ref)
    cy = 0.5 * (ys.min() + ys.max()) - u(0.0, 30.0) / spacing[1]   # anterior: lower y
    cx = 0.5 * (xs.min() + xs.max()) + u(0.0, 40.0) / spacing[2]   # patient's left: higher x
    radii = [u(*config.heart_radius_mm) for _ in range(3)]
    wall = u(*config.heart_wall_mm)
    box, outer = _ellipsoid_at((cz, cy, cx), radii, spacing, suv.shape)
    grids = np.ogrid[tuple(slice(b.start, b.stop) for b in box)]
    inner = sum(((g - c) * s / max(r - wall, 1.0)) ** 2
                for g, c, s, r in zip(grids, (cz, cy, cx), spacing, radii, strict=True)) <= 1.0
    region = free[box]
    myocardium, pool = u(*config.heart_suv), u(*RELATIVE_TO_LIVER[5]) * u(*ORGAN_SUV[1])
    suv[box][outer & ~inner & region] = myocardium
    suv[box][inner & region] = pool
    return {"suv": round(float(myocardium), 3), "centre": [round(float(c), 1) for c in (cz, cy, cx)]}


def render_pet(labels: np.ndarray, body: np.ndarray, spacing_zyx, rng: np.random.Generator,
               config: PetRenderConfig = PetRenderConfig(), extension: np.ndarray | None = None,
               ) -> tuple[np.ndarray, dict]:
    """(SUV image float32, what was drawn). `labels` (uint8, FLARE numbering) and `body` (bool) in numpy (z, y, x)
    order of a frame whose axis 1 runs anterior -> posterior. `extension` (bool, same shape): voxels outside the
    labelled field of view (the body extension of `render_pet_case`), where the large hot structures go first."""
    labels = np.asarray(labels)
    body = np.asarray(body, dtype=bool)
    if labels.shape != body.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and body mask {body.shape} must be the same 3D shape")
    unknown = sorted(set(np.unique(labels).tolist()) - {0} - set(ORGAN_SUV) - set(RELATIVE_TO_LIVER))
    if unknown:
        raise ValueError(f"labels {unknown} have no SUV in the PET renderer (FLARE labels 1..13)")
    body = body | (labels > 0)
    spacing = tuple(float(s) for s in spacing_zyx)
    shape = labels.shape
    u = rng.uniform

    skin, fat, muscle, interior = body_layers(body, spacing, rng, config.skin_mm, config.fat_mm, config.muscle_mm)
    suv = np.zeros(shape, dtype=np.float32)
    suv[skin] = u(*config.skin_suv)
    suv[fat] = u(*config.fat_suv)
    suv[muscle] = u(*config.muscle_suv)
    mix = _smooth_field(shape, spacing, 12.0, rng)
    is_fat = mix < np.quantile(mix, config.visceral_fat_fraction)
    suv[interior] = np.where(is_fat[interior], u(*config.visceral_fat_suv), u(*config.soft_tissue_suv))
    shell, core = _vertebra(body & interior, labels, spacing, 18.0)
    suv[shell] = u(*config.muscle_suv)
    suv[core] = u(*config.marrow_suv)

    drawn: dict = {}
    liver = u(*ORGAN_SUV[1])
    for organ in (int(o) for o in np.unique(labels) if o):
        mask = labels == organ
        value = liver * u(*RELATIVE_TO_LIVER[organ]) if organ in RELATIVE_TO_LIVER else (
            liver if organ == 1 else u(*ORGAN_SUV[organ]))
        suv[mask] = value
        drawn[organ] = round(float(value), 3)
    if rng.uniform() < config.urine_probability:
        urine = u(*config.urine_suv)
        for organ in KIDNEYS:
            mask = labels == organ
            if mask.any():
                deep = ndimage.distance_transform_edt(mask, sampling=spacing) > config.pelvis_mm
                suv[deep] = urine
        drawn["urine"] = round(float(urine), 3)

    free = interior & (labels == 0)
    preferred = np.zeros(shape, dtype=bool)
    if extension is not None:
        preferred = np.asarray(extension, dtype=bool) & free
    drawn["large_hot"] = _hot_spots(suv, free, preferred, spacing, rng, config.large_hot,
                                    config.large_hot_radius_mm, config.large_hot_suv)
    drawn["small_hot"] = _hot_spots(suv, free, np.zeros(shape, dtype=bool), spacing, rng, config.small_hot,
                                    config.small_hot_radius_mm, config.small_hot_suv)
    if config.heart_probability > 0 and (labels == 1).any() and rng.uniform() < config.heart_probability:
        drawn["heart"] = _heart(suv, free, labels, body, spacing, rng, config)

    if config.texture > 0:
        suv[body] *= np.clip(1.0 + config.texture * _smooth_field(shape, spacing, config.texture_mm, rng)[body],
                             0.5, 1.5)
    fwhm = u(*config.psf_fwhm_mm)
    suv = ndimage.gaussian_filter(suv, [fwhm / 2.3548 / s for s in spacing], mode="constant")
    level = u(*config.noise)
    if level > 0:
        noise = _smooth_field(shape, spacing, config.noise_mm, rng)
        suv = suv + level * np.sqrt(np.maximum(suv, 0.0)) * noise
    drawn.update(psf_fwhm_mm=round(float(fwhm), 2), noise=round(float(level), 3))
    return np.maximum(suv, 0.0).astype(np.float32), drawn


def painter(config: PetRenderConfig = PetRenderConfig()):
    """`render_pet` with `config` as the paint function of `variants.render_canonical` (the body extension goes
    to the large hot structures first)."""
    return lambda labels, body, spacing, rng, extension: render_pet(labels, body, spacing, rng, config,
                                                                    extension=extension)
