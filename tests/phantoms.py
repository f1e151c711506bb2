"""The tests' phantom layouts, all drawn by the project's one generator (eval/phantoms.py: shapes -> label map ->
painted image). Each layout keeps the geometry its tests reason about:

- `blob_image`: one bright ball in noise (engine input handling).
- `abdomen_phantom`: box organs in the canonical frame, body ellipse (laterality, CT / PET renderers).
- `synthetic_case`: ellipsoid liver, spleen and kidneys in mm, stored x-flipped every other case (training.c2f).
- `slice_phantom`: CT- or MRI-like elliptic organs that shrink towards both ends of the volume (CycleGAN).
- `grid_phantom` / `organ_grid_case`: 13 box organs, one per cell of a 4 x 4 y-x grid (self-training filter and
  cycle: every organ present, sizes the filter's statistics can be computed from).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.phantoms import INF, Box, Ellipsoid, index_grid, label_map, paint
from helpers import write_image


def blob_image(shape=(40, 64, 64), center=None, radius=8.0, seed=0) -> np.ndarray:
    """Noisy background (N(0, 1)) with one bright ball (+10), float32."""
    c = center or tuple(s // 2 for s in shape)
    labels = label_map(shape, [(1, Ellipsoid(tuple(c), (radius,) * 3))])
    return paint(labels, {1: 10.0}, noise=1.0, rng=np.random.default_rng(seed), dtype=np.float64).astype(np.float32)


def abdomen_phantom(shape=(12, 80, 96), kidney_zy=((4, 9), (50, 60)), kidney_x=((25, 35), (60, 70))):
    """(labels, body): a liver block, a spleen block and two kidneys (FLARE labels 1, 3, 2 right, 13 left) in an
    elliptic body, numpy (z, y, x) in the canonical frame (axis 1 anterior -> posterior, x towards the patient's
    left)."""
    (z0, z1), (y0, y1) = kidney_zy
    organs = [(1, Box((2, 10), (20, 45), (15, 45))), (3, Box((2, 10), (20, 40), (60, 78)))]
    organs += [(organ, Box((z0, z1), (y0, y1), x)) for organ, x in zip((2, 13), kidney_x, strict=True)]
    body = Ellipsoid((0.0, 40.0, 48.0), (INF, 36.0, 44.0)).mask(index_grid(shape))
    return label_map(shape, organs), np.broadcast_to(body, tuple(shape)).copy()


# organ -> (centre as a fraction of the (z, y, x) extent, semi-axes in mm, intensity)
C2F_ORGANS: dict[int, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    1: ((0.45, 0.40, 0.30), (18.0, 20.0, 20.0), 120.0),  # liver (image left = patient right)
    3: ((0.45, 0.45, 0.72), (14.0, 14.0, 12.0), 60.0),  # spleen
    2: ((0.60, 0.72, 0.30), (12.0, 10.0, 9.0), 200.0),  # right kidney
    13: ((0.60, 0.72, 0.68), (12.0, 10.0, 9.0), 170.0),  # left kidney
}


def synthetic_case(shape=(24, 48, 48), spacing_mm=(3.0, 2.0, 2.0), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8) in numpy (z, y, x): ellipsoid organs whose centres jitter with `seed`, a body
    of 30, noise 8."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    coords = [zz * spacing_mm[0], yy * spacing_mm[1], xx * spacing_mm[2]]
    extent = [n * s for n, s in zip(shape, spacing_mm, strict=True)]
    organs = [(organ, Ellipsoid(tuple((f + rng.uniform(-0.04, 0.04)) * e for f, e in zip(centre, extent, strict=True)), axes))
              for organ, (centre, axes, _) in C2F_ORGANS.items()]
    labels = label_map(shape, organs, coords)
    body = Ellipsoid((0.0, extent[1] / 2, extent[2] / 2), (INF, 0.48 * extent[1], 0.48 * extent[2])).mask(coords)
    image = paint(labels, {o: v for o, (_, _, v) in C2F_ORGANS.items()}, body=body, body_value=30.0, noise=8.0,
                  rng=rng)
    return image, labels


def write_synthetic_source(folder: Path, n_cases: int, seed: int = 0, shape=(24, 48, 48),
                           spacing_mm=(3.0, 2.0, 2.0), flip_every: int = 2) -> Path:
    """`case<i>_0000.nii.gz` + `case<i>.nii.gz` files; every `flip_every`-th case is stored x-flipped (direction
    -1 on x) so the canonical reorientation is exercised."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        image, labels = synthetic_case(shape, spacing_mm, seed + i)
        direction = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
        if flip_every and i % flip_every == 1:
            image, labels = image[:, :, ::-1].copy(), labels[:, :, ::-1].copy()
            direction = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
        for arr, name in ((image, f"case{i:02d}_0000.nii.gz"), (labels, f"case{i:02d}.nii.gz")):
            write_image(arr, folder / name, spacing=tuple(reversed(spacing_mm)), direction=direction)
    return folder


# (label, centre y, centre x, radius y, radius x) as fractions of the slice, patient's right on the image's left
SLICE_ORGANS = ((1, 0.42, 0.35, 0.18, 0.20), (2, 0.62, 0.33, 0.08, 0.06), (3, 0.45, 0.70, 0.10, 0.08),
                (13, 0.62, 0.66, 0.08, 0.06))
INTENSITY = {"ct": {"air": -1000.0, "body": 40.0, 1: 60.0, 2: 160.0, 3: 50.0, 13: 160.0},
             "mri": {"air": 0.0, "body": 300.0, 1: 150.0, 2: 500.0, 3: 400.0, 13: 500.0}}


def slice_phantom(shape_zyx: tuple[int, int, int], modality: str = "ct", seed: int = 0,
                  noise: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8), (z, y, x): an elliptic body with a liver (1), right kidney (2), spleen (3) and
    left kidney (13) in every axial slice, shrinking by up to 30 % towards both ends; CT or MRI intensities."""
    z, h, w = shape_zyx
    coords = index_grid(shape_zyx, offset=(0.0, 0.5, 0.5), divisor=(1.0, h, w))
    taper = np.array([1.0 - 0.3 * abs(k - (z - 1) / 2) / max(1.0, z / 2) for k in range(z)]).reshape(z, 1, 1)
    label = label_map(shape_zyx, [(lab, Ellipsoid((0.0, cy, cx), (INF, ry, rx))) for lab, cy, cx, ry, rx in
                                  SLICE_ORGANS], coords, taper)
    values = INTENSITY[modality]
    body = Ellipsoid((0.0, 0.5, 0.5), (INF, 0.42, 0.46)).mask(coords)
    image = paint(label, {lab: values[lab] for lab, *_ in SLICE_ORGANS}, background=values["air"], body=body,
                  body_value=values["body"], noise=noise, rng=np.random.default_rng(seed))
    return image, label


def write_case(images_dir: Path, labels_dir: Path | None, name: str, shape_zyx: tuple[int, int, int],
               modality: str = "ct", spacing: tuple[float, float, float] = (1.5, 1.5, 4.0),
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
               direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1), seed: int = 0) -> tuple[Path, Path | None]:
    """Write a `slice_phantom` as `<name>_0000.nii.gz` (CT: int16) and `<name>.nii.gz` into `labels_dir`."""
    image, label = slice_phantom(shape_zyx, modality, seed)
    if modality == "ct":
        image = np.round(image).astype(np.int16)
    paths = []
    for arr, folder, fname in ((image, images_dir, f"{name}_0000.nii.gz"), (label, labels_dir, f"{name}.nii.gz")):
        if folder is None:
            paths.append(None)
            continue
        Path(folder).mkdir(parents=True, exist_ok=True)
        paths.append(Path(folder) / fname)
        write_image(arr, paths[-1], spacing=spacing, origin=origin, direction=direction)
    return paths[0], paths[1]


# 13-organ grid: the y-x plane is cut into 4 x 4 cells of 12 x 12 voxels, organ o sits in cell CELL[o]
SHAPE = (32, 48, 48)
CELL = {1: 5, 2: 0, 3: 3, 4: 1, 5: 2, 6: 4, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 12, 13: 15}


def organ_box(organ: int, half: int, z=(8, 24), cell: dict[int, int] = CELL) -> Box:
    cy, cx = divmod(cell[organ], 4)
    y0, x0 = cy * 12 + 6, cx * 12 + 6
    return Box((z[0], z[1]), (y0 - half, y0 + half), (x0 - half, x0 + half))


FLARE_LABELS = tuple(range(1, 14))


def grid_phantom(seed: int | None = None, organs=FLARE_LABELS, liver_half: int = 5, jitter: bool = True
                 ) -> np.ndarray:
    """uint8 label map of SHAPE: organ o a box of `half` voxels around its cell's centre (liver `liver_half`, the
    others 3), slices 8..24; with `seed`, each half-size and z extent vary by +-1 voxel (CT-like spread)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for o in organs:
        j = (lambda: int(rng.integers(-1, 2))) if (jitter and seed is not None) else (lambda: 0)
        half = (liver_half if o == 1 else 3) + (j() if o != 1 or liver_half > 2 else 0)
        boxes.append((o, organ_box(o, half, (8 + j(), 24 + j()))))
    return label_map(SHAPE, boxes)


def write_labels_nii(arr: np.ndarray, path: Path, spacing=(1.5, 1.5, 2.5)) -> None:
    write_image(arr.astype(np.uint8), path, spacing=spacing)


def write_ct_label_set(folder: Path, n: int = 8, first_seed: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_labels_nii(grid_phantom(first_seed + i), folder / f"ct_{i:03d}.nii.gz")
    return folder


# the self-training cycle's scans: every organ in its own cell, the image painted per organ (FLARE 1..13)
CYCLE_SHAPE = (24, 48, 48)
CYCLE_CELL = dict(zip(range(1, 14), (5, 0, 3, 1, 2, 4, 6, 7, 8, 9, 10, 12, 15), strict=True))


def organ_grid_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, labels uint8) of CYCLE_SHAPE: 13 box organs (+-1 voxel jitter), intensity 30 + 15 x label,
    background 10, noise 2."""
    rng = np.random.default_rng(seed)
    boxes = []
    for organ in CYCLE_CELL:
        h = 4 + int(rng.integers(-1, 2))
        z = (4 + int(rng.integers(-1, 2)), 20 + int(rng.integers(-1, 2)))
        boxes.append((organ, organ_box(organ, h, z, CYCLE_CELL)))
    lab = label_map(CYCLE_SHAPE, boxes)
    img = paint(lab, {o: 30.0 + 15.0 * o for o in CYCLE_CELL}, background=10.0, noise=2.0, rng=rng, dtype=np.float64)
    return img.astype(np.float32), lab
