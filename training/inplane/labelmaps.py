"""Label-map-driven image synthesis (SynthSeg's idea): training volumes made from manual label maps alone.

The 50 FLARE22 label maps (`flare22_labels/labelsTr` of the real data; their CT images are not here) are the only
manual duodenum shapes we have. Each map becomes `variants` synthetic volumes on a stage's grid, painted by
training.render.synth (the random-contrast painter: skin, fat, muscle wall, visceral fat and bowel, the vertebra,
each organ, all with random intensities; bias field, gamma, blur, noise) inside a body the maps do not hold: an
ellipse drawn around the organs. Nothing about any real sequence is assumed: every intensity is random, so a
network learns the organs from their shapes and their neighbours, the part of the anatomy that is the same in CT
and in every MRI sequence. The training step adds the row's appearance randomisation on top (augment.py), as on
every other patch.

A row may tie the duodenum's intensity to its neighbours' (`tie_probability`, DUODENUM_TIES): in that share of the
images it has the mean of the bowel, the pancreas or the stomach, as on real scans (bowel-like on CT, pancreas-like
on T1 MRI), so it has to be learnt by its shape and place rather than by a contrast of its own.

Each volume is fixed by (map, variant, seed, tie_probability): a retrained row sees the same volumes.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from inference import orientation, resample
from inference.labels import ORGANS

from training.render.synth import ORGAN as ORGAN_CLASS
from training.render.synth import SOFT_TISSUE

from .data import Volume, label_map, organ_box, prepare_volume
from .protocol import FLARE22_MAPS

MAX_LABEL = 13
_LABEL = {o.short: o.label for o in ORGANS}
# the painter's classes (training.render.synth) whose mean the duodenum may take: bowel / soft tissue, pancreas, stomach
DUODENUM_TIES = ((ORGAN_CLASS + _LABEL["duodenum"], (SOFT_TISSUE, ORGAN_CLASS + _LABEL["pancreas"],
                                                    ORGAN_CLASS + _LABEL["stomach"])),)


def label_map_files(data: Path) -> list[Path]:
    """The FLARE22 label maps under the real data folder `data` (sorted)."""
    folder = Path(data) / FLARE22_MAPS
    files = sorted(folder.glob("*.nii.gz"))
    if not files:
        raise FileNotFoundError(f"{folder}: no label maps (*.nii.gz)")
    return files


def body_ellipse(labels: np.ndarray, spacing_mm, rng: np.random.Generator) -> np.ndarray:
    """A body around the organs: on every slice the same axis-aligned ellipse, centred on the in-plane box of all
    organs, its half-axes the box's half-sides times a random factor (1.1-1.4) plus a random margin (20-50 mm),
    clipped to the grid; every organ voxel is inside it."""
    organs = labels > 0
    if not organs.any():
        raise ValueError("a label map without organs has no body to draw")
    _, ys, xs = np.nonzero(organs)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    factor, margin = rng.uniform(1.1, 1.4), rng.uniform(20.0, 50.0)
    ay = (ys.max() - ys.min()) / 2 * factor + margin / spacing_mm[1]
    ax = (xs.max() - xs.min()) / 2 * factor + margin / spacing_mm[2]
    yy, xx = np.mgrid[: labels.shape[1], : labels.shape[2]]
    disc = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1.0
    return np.broadcast_to(disc, labels.shape) | organs


def synth_image(labels: np.ndarray, spacing_mm, rng: np.random.Generator, tie_probability: float = 0.0) -> np.ndarray:
    """A random-contrast image (float32, about [0, 1]) of a label map (z, y, x; axis 1 anterior -> posterior, the
    engine's canonical order) on a grid of `spacing_mm`: training.render.synth's painter (every tissue class, its
    own random intensity; the duodenum its neighbours' with `tie_probability`) on the body `body_ellipse` draws
    around the organs."""
    from training.render.synth import SynthRenderConfig, render_synth

    config = SynthRenderConfig(ties=DUODENUM_TIES, tie_probability=tie_probability)
    return render_synth(labels, body_ellipse(labels, spacing_mm, rng), spacing_mm, rng, config)[0]


def map_volume(path: Path, spacing_mm) -> Volume:
    """The label map `path` in canonical order on the grid of `spacing_mm` (z None: the map's own slices), as a
    pack holds it: no image, its labels as they are (channel k is FLARE label k)."""
    from inference.io import read_label_map

    image, raw = read_label_map(path, max_label=MAX_LABEL, what="FLARE label map")
    orient = orientation.orientation_from_direction(image.GetDirection())
    lab, spacing = orient.apply(raw), orient.spacing(tuple(reversed(image.GetSpacing())))
    grid = resample.labels_to_shape(lab.astype(np.uint8), resample.shape_at_spacing(lab.shape, spacing, spacing_mm))
    grid_spacing = tuple(s if t is None else float(t) for s, t in zip(spacing, spacing_mm, strict=True))
    return Volume(path.name.removesuffix(".nii.gz"), np.zeros(grid.shape, np.float16), grid, np.zeros_like(grid),
                  grid_spacing, organ_box(grid), tuple(range(MAX_LABEL + 1)))


def synth_volume(vol: Volume, spacing_mm, label_ids: tuple[int, ...], variant: int, seed: int,
                 tie_probability: float = 0.0) -> Volume:
    """Variant `variant` of the synthetic volume of the packed label map `vol` (map_volume), painted on its grid
    (synth_image) and prepared as every training volume (data.prepare_volume) on the grid of `spacing_mm`."""
    grid = label_map(vol)
    rng = np.random.default_rng([seed, variant, zlib.crc32(vol.name.encode())])
    image = synth_image(grid, vol.spacing_mm, rng, tie_probability)
    return prepare_volume(f"{vol.name}_synth{variant}", image, vol.spacing_mm, grid, spacing_mm, label_ids)


def synth_volumes(maps: list[Volume], spacing_mm, label_ids: tuple[int, ...], variants: int, seed: int,
                  tie_probability: float = 0.0, progress: bool = True) -> list[Volume]:
    """`variants` synthetic volumes of every packed label map of `maps` (map_volume) on the grid of
    `spacing_mm`."""
    from tqdm import tqdm

    return [synth_volume(m, spacing_mm, label_ids, v, seed, tie_probability)
            for m in tqdm(maps, desc=f"synthesise flare22 at {list(spacing_mm)} mm", disable=not progress, unit="map")
            for v in range(variants)]
