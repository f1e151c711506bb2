"""CT-like Hounsfield images painted from a label map and a body mask only.

The end-to-end benchmark needs labelled "CT" whose organs lie where the CHAOS source labels put them, with a real
appearance gap to the MRI: `render_ct` never sees an MRI intensity. Its inputs are the FLARE-numbered label map,
a binary body mask and the voxel spacing; everything else is drawn from `RenderConfig` and a seeded generator:

* air (-1000 HU) outside the body;
* skin, a subcutaneous fat layer of smoothly varying thickness, and an abdominal muscle wall, laid out by the
  in-plane distance (mm) to the body surface;
* inside: a mixture of visceral fat and soft tissue/bowel (a smooth random field picks between them), a few
  bowel-gas pockets, and a vertebra (cortical shell, cancellous core) behind the organs at the posterior midline;
* organs with typical HU for the chosen contrast phase (native, arterial, portal venous), kidneys with a brighter
  cortex in the contrast phases, a low-frequency texture per tissue;
* partial-volume blur (Gaussian, `blur_mm`) and quantum noise (`noise_hu`), clipped to the int16 CT range.

`body_mask_from_image` derives the binary body mask from any scan (threshold, hole filling, largest component):
only that binary mask of the source MRI enters the rendering.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from inference.labels import LATERAL_PAIRS

PHASES = ("native", "arterial", "portal")

# FLARE label -> HU (mean) per phase. Values from typical adult abdominal CT.
ORGAN_HU: dict[int, dict[str, float]] = {
    1: {"native": 58.0, "arterial": 75.0, "portal": 110.0},      # liver
    2: {"native": 32.0, "arterial": 150.0, "portal": 170.0},     # right kidney (cortex: + kidney_cortex_hu)
    3: {"native": 48.0, "arterial": 120.0, "portal": 120.0},     # spleen
    4: {"native": 40.0, "arterial": 90.0, "portal": 95.0},       # pancreas
    5: {"native": 42.0, "arterial": 300.0, "portal": 160.0},     # aorta
    6: {"native": 40.0, "arterial": 90.0, "portal": 150.0},      # inferior vena cava
    7: {"native": 25.0, "arterial": 55.0, "portal": 60.0},       # right adrenal
    8: {"native": 25.0, "arterial": 55.0, "portal": 60.0},       # left adrenal
    9: {"native": 10.0, "arterial": 12.0, "portal": 14.0},       # gallbladder (bile)
    10: {"native": 40.0, "arterial": 60.0, "portal": 70.0},      # esophagus
    11: {"native": 30.0, "arterial": 60.0, "portal": 80.0},      # stomach wall / content mix
    12: {"native": 35.0, "arterial": 70.0, "portal": 85.0},      # duodenum
    13: {"native": 32.0, "arterial": 150.0, "portal": 170.0},    # left kidney
}
KIDNEYS = LATERAL_PAIRS[0]   # (right, left) kidney
AIR_HU = -1000.0


@dataclass(frozen=True)
class RenderConfig:
    """What `render_ct` paints; all lengths in mm, all intensities in HU."""

    phase: str = "random"                 # one of PHASES, or "random" (drawn per case from the generator)
    skin_mm: float = 2.0
    skin_hu: float = 40.0
    fat_mm: tuple[float, float] = (8.0, 25.0)     # subcutaneous fat thickness range (varies around the body)
    fat_hu: float = -100.0
    muscle_mm: float = 12.0
    muscle_hu: float = 50.0
    visceral_fat_fraction: float = 0.35   # share of the interior that is visceral fat rather than soft tissue
    soft_tissue_hu: float = 35.0
    gas_pockets: int = 6                  # bowel gas blobs inside the body (not in organs)
    gas_radius_mm: tuple[float, float] = (5.0, 14.0)
    gas_hu: float = -850.0
    vertebra: bool = True
    vertebra_radius_mm: float = 18.0
    cortical_hu: float = 700.0
    cancellous_hu: float = 220.0
    kidney_cortex_hu: float = 40.0        # extra HU in the outer kidney rim in contrast phases
    cortex_mm: float = 6.0
    organ_jitter_hu: float = 8.0          # case-level random offset per organ (sd)
    texture_hu: float = 10.0              # low-frequency texture amplitude (sd)
    texture_mm: float = 6.0               # texture correlation length
    blur_mm: tuple[float, float, float] = (1.0, 0.6, 0.6)  # partial-volume Gaussian sigma (z, y, x)
    noise_hu: float = 12.0                # quantum noise (sd)
    organ_hu: dict[int, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in ORGAN_HU.items()})

    def __post_init__(self) -> None:
        if self.phase not in PHASES + ("random",):
            raise ValueError(f"phase must be one of {PHASES + ('random',)}, got {self.phase!r}")
        if self.fat_mm[0] < 0 or self.fat_mm[1] < self.fat_mm[0]:
            raise ValueError(f"fat_mm must be (low, high) with 0 <= low <= high, got {self.fat_mm}")
        if self.noise_hu < 0 or self.texture_hu < 0:
            raise ValueError("noise_hu and texture_hu must be >= 0")


def _smooth_field(shape, spacing, length_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length `length_mm`."""
    white = rng.standard_normal(shape).astype(np.float32)
    sigma = [max(length_mm / s, 0.0) for s in spacing]
    f = ndimage.gaussian_filter(white, sigma, mode="reflect")
    sd = float(f.std())
    return f / sd if sd > 0 else f


def _inplane_depth(body: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) of each body voxel to the body surface within its slice (axis 0 = z)."""
    depth = np.zeros(body.shape, dtype=np.float32)
    for z in range(body.shape[0]):
        if body[z].any():
            depth[z] = ndimage.distance_transform_edt(body[z], sampling=spacing[1:])
    return depth


def body_layers(body: np.ndarray, spacing, rng: np.random.Generator, skin_mm: float, fat_mm: tuple[float, float],
                muscle_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(skin, subcutaneous fat, muscle wall, interior) masks by in-plane depth below the body surface; the fat
    layer's thickness varies smoothly within `fat_mm` (one random field drawn from `rng`)."""
    depth = _inplane_depth(body, spacing)
    fat_thickness = np.interp(_smooth_field(body.shape, spacing, 40.0, rng), [-2.0, 2.0], list(fat_mm))
    skin = body & (depth <= skin_mm)
    fat = body & ~skin & (depth <= skin_mm + fat_thickness)
    muscle = body & ~skin & ~fat & (depth <= skin_mm + fat_thickness + muscle_mm)
    return skin, fat, muscle, body & ~skin & ~fat & ~muscle


def _vertebra(body: np.ndarray, labels: np.ndarray, spacing, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(cortical shell, cancellous core) masks of a cylinder at the posterior midline of each slice's body,
    posterior to the kidneys' centre when they exist. Array axis 1 (y) increases towards posterior in the
    canonical CHAOS/FLARE frame; the caller passes labels in that frame."""
    shell = np.zeros(body.shape, dtype=bool)
    core = np.zeros(body.shape, dtype=bool)
    yy, xx = np.indices(body.shape[1:], dtype=np.float32)
    for z in range(body.shape[0]):
        if not body[z].any():
            continue
        ys, xs = np.nonzero(body[z])
        cx = 0.5 * (xs.min() + xs.max())
        posterior = ys.max()
        cy = posterior - (radius_mm + 25.0) / spacing[1]
        r = np.sqrt(((yy - cy) * spacing[1]) ** 2 + ((xx - cx) * spacing[2]) ** 2)
        inside = (r <= radius_mm) & body[z] & (labels[z] == 0)
        core[z] = inside & (r <= radius_mm - 3.0)
        shell[z] = inside & ~core[z]
    return shell, core


def render_ct(labels: np.ndarray, body: np.ndarray, spacing_zyx, rng: np.random.Generator,
              config: RenderConfig = RenderConfig()) -> tuple[np.ndarray, str]:
    """(HU image int16, phase used). `labels` (uint8, FLARE numbering) and `body` (bool) in numpy (z, y, x)
    order of a frame whose axis 1 runs anterior -> posterior (the canonical frame of CHAOS/FLARE files)."""
    labels = np.asarray(labels)
    body = np.asarray(body, dtype=bool)
    if labels.shape != body.shape or labels.ndim != 3:
        raise ValueError(f"labels {labels.shape} and body mask {body.shape} must be the same 3D shape")
    body = body | (labels > 0)
    spacing = tuple(float(s) for s in spacing_zyx)
    phase = config.phase if config.phase != "random" else str(rng.choice(PHASES))
    shape = labels.shape

    skin, fat, muscle, interior = body_layers(body, spacing, rng, config.skin_mm, config.fat_mm, config.muscle_mm)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[skin] = config.skin_hu
    hu[fat] = config.fat_hu
    hu[muscle] = config.muscle_hu
    mix = _smooth_field(shape, spacing, 12.0, rng)
    is_fat = mix < np.quantile(mix, config.visceral_fat_fraction)
    hu[interior] = np.where(is_fat[interior], config.fat_hu + 10.0, config.soft_tissue_hu)

    if config.vertebra:
        shell, core = _vertebra(body & interior, labels, spacing, config.vertebra_radius_mm)
        hu[shell] = config.cortical_hu
        hu[core] = config.cancellous_hu

    free = interior & (labels == 0)
    if config.gas_pockets and free.any():
        zz, yy, xx = np.indices(shape, dtype=np.float32)
        candidates = np.argwhere(free)
        for _ in range(config.gas_pockets):
            c = candidates[rng.integers(len(candidates))]
            rad = rng.uniform(*config.gas_radius_mm)
            d2 = ((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[2]) ** 2
            hu[(d2 <= rad * rad) & free] = config.gas_hu

    for organ in np.unique(labels):
        organ = int(organ)
        if organ == 0:
            continue
        if organ not in config.organ_hu:
            raise ValueError(f"label {organ} has no HU in the render config (FLARE labels 1..13)")
        mask = labels == organ
        value = config.organ_hu[organ][phase] + rng.normal(0.0, config.organ_jitter_hu)
        hu[mask] = value
        if organ in KIDNEYS and phase != "native":
            rim = mask & ~ndimage.binary_erosion(mask, iterations=max(1, int(round(config.cortex_mm / spacing[1]))),
                                                 structure=np.ones((1, 3, 3), bool))
            hu[rim] += config.kidney_cortex_hu

    if config.texture_hu > 0:
        hu[body] += config.texture_hu * _smooth_field(shape, spacing, config.texture_mm, rng)[body]
    sigma = [b / s for b, s in zip(config.blur_mm, spacing, strict=True)]
    hu = ndimage.gaussian_filter(hu, sigma, mode="nearest")
    if config.noise_hu > 0:
        hu += rng.normal(0.0, config.noise_hu, shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), phase


def body_mask_from_image(image: np.ndarray, spacing_zyx, labels: np.ndarray | None = None) -> np.ndarray:
    """Binary body mask of a scan: smoothed image above a threshold between background and tissue (half the
    99th percentile of the non-zero voxels' 5th-95th range start), holes filled per slice, largest 3D component,
    organs (when `labels` is given) always inside. Returns bool (z, y, x)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"image must be 3D, got shape {a.shape}")
    spacing = tuple(float(s) for s in spacing_zyx)
    smooth = ndimage.gaussian_filter(a, [0.0, 2.0 / spacing[1], 2.0 / spacing[2]])
    lo, hi = np.percentile(smooth, [2.0, 99.0])
    if hi <= lo:
        raise ValueError("constant image: no body can be found")
    mask = smooth > lo + 0.12 * (hi - lo)
    mask = ndimage.binary_opening(mask, structure=np.ones((1, 3, 3), bool))
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
        mask = lab == (int(np.argmax(sizes)) + 1)
    if labels is not None:
        mask |= np.asarray(labels) > 0
        for z in range(mask.shape[0]):
            mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask
