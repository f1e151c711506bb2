"""The PET plausibility check (there are no PET labels here): a PET mask holds only the PET labels, each organ's
volume lies within adult ranges, and the organs lie where anatomy puts them relative to each other. The
benchmark (training.inplane) and the shipped-model tests judge PET models by it; the shipped PET model was chosen
by it in the retired first benchmark (benchmarks/results/uda-bench-history)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from inference.atomic import write_csv
from inference.labels import PET_ORGANS

PET_CASES = ("fdg_qinhn0139", "fdg_sts001")   # the two real FDG PET scans (../shared/data/real/pet_fdg)
PET_ORGAN_NAMES = PET_ORGANS
# adult organ volumes (ml) a plausible PET segmentation stays within, PET labels: liver 1, right kidney 2,
# spleen 3, left kidney 4 (wide on purpose: the check catches a wrong organ or a whole-body blob, not 20 % errors;
# adult liver ~1.2-1.8 l, kidney ~0.12-0.2 l, spleen ~0.1-0.3 l, splenomegaly up to ~1 l)
PET_PLAUSIBLE_ML = {1: (600.0, 4000.0), 2: (40.0, 500.0), 3: (40.0, 1200.0), 4: (40.0, 500.0)}
CHECK_COLUMNS = ("case", "label", "organ", "volume_ml", "low_ml", "high_ml", "plausible", "placed")


def pet_volumes_ml(label_file: Path) -> tuple[dict[int, float], list[int]]:
    """({PET label: volume in ml}, every label value present) of one written PET label map."""
    from inference.io import read_label_map

    img, arr = read_label_map(label_file, what="PET mask")
    counts = np.bincount(arr.ravel().astype(np.int64))
    voxel_ml = float(np.prod(img.GetSpacing())) / 1000.0
    present = [int(v) for v in np.flatnonzero(counts)]
    return {o: round(float(counts[o]) * voxel_ml, 1) if o < len(counts) else 0.0 for o in PET_ORGAN_NAMES}, present


def organ_centroids_mm(label_file: Path) -> dict[int, tuple[float, float, float]]:
    """{label: centroid (x, y, z) in mm, LPS world coordinates} of the labels present in one label map (the
    direction matrix applied: x grows towards the patient's left, z towards the head, whatever the voxel order)."""
    from inference.io import read_label_map

    img, arr = read_label_map(label_file, what="label map")
    out = {}
    for label in (int(v) for v in np.unique(arr) if v):
        zyx = np.argwhere(arr == label).mean(axis=0)
        out[label] = tuple(float(v) for v in img.TransformContinuousIndexToPhysicalPoint(
            [float(zyx[2]), float(zyx[1]), float(zyx[0])]))
    return out


def pet_placement(centroids: dict[int, tuple[float, float, float]]) -> dict[int, bool]:
    """Whether each PET organ lies where anatomy puts it relative to the others (no labels needed): the liver to
    the patient's right of the spleen, the right kidney to the right of the left kidney, each kidney's centroid
    below (caudal to) the centroid of the organ above it (liver / spleen). An absent organ is not placed; rules
    that involve an absent partner are not checked. PET labels: 1 liver, 2 right kidney, 3 spleen, 4 left kidney."""
    x = {o: c[0] for o, c in centroids.items()}
    z = {o: c[2] for o, c in centroids.items()}
    rules = [((1, 3), lambda: x[1] < x[3]), ((2, 4), lambda: x[2] < x[4]),
             ((2, 1), lambda: z[2] < z[1]), ((4, 3), lambda: z[4] < z[3])]
    placed = {o: o in centroids for o in PET_ORGAN_NAMES}
    for (a, b), holds in rules:
        if a in centroids and b in centroids and not holds():
            placed[a] = False
            if (a, b) in ((1, 3), (2, 4)):   # a left-right swap: both sides are wrong
                placed[b] = False
    return placed


def check_rows(pred: Path, cases=PET_CASES) -> tuple[list[list], bool, bool]:
    """(one CSV row per scan and organ, every organ plausible, every organ placed) for the masks pred/<case>.nii.gz."""
    rows, ok, all_placed = [], True, True
    for case in cases:
        f = Path(pred) / f"{case}.nii.gz"
        if not f.is_file():
            raise RuntimeError(f"{f}: the engine wrote no label map")
        vols, present = pet_volumes_ml(f)
        if not set(present) <= {0, *PET_ORGAN_NAMES}:
            raise RuntimeError(f"{f}: labels {present} outside the PET scheme {{0,1,2,3,4}}")
        placed = pet_placement(organ_centroids_mm(f))
        for organ, name in PET_ORGAN_NAMES.items():
            lo, hi = PET_PLAUSIBLE_ML[organ]
            good = lo <= vols[organ] <= hi
            ok &= good
            all_placed &= placed[organ]
            rows.append([case, organ, name, f"{vols[organ]:.1f}", lo, hi, int(good), int(placed[organ])])
    return rows, ok, all_placed


def write_check(out: Path, rows: list[list]) -> Path:
    return write_csv(out, CHECK_COLUMNS, rows, mkdir=True)


def read_pet_check_placed(csv_path: Path) -> dict[tuple[str, int], tuple[float, bool, bool | None]]:
    """{(case, PET label): (volume ml, plausible, placed)}; placed is None in CSVs written before that column."""
    with open(csv_path) as fh:
        return {(r["case"], int(r["label"])): (float(r["volume_ml"]), r["plausible"] == "1",
                                               None if r.get("placed") is None else r["placed"] == "1")
                for r in csv.DictReader(fh)}


def pet_markdown(csv_path: Path) -> str:
    chk = read_pet_check_placed(csv_path)
    lines = ["| scan | " + " | ".join(f"{n} (ml)" for n in PET_ORGAN_NAMES.values()) + " |",
             "|" + "---|" * (len(PET_ORGAN_NAMES) + 1)]
    for case in PET_CASES:
        cells = []
        for organ in PET_ORGAN_NAMES:
            v, good, placed = chk.get((case, organ), (float("nan"), False, None))
            cells.append(f"{v:.0f}" + ("" if good else " (implausible)") + (" (misplaced)" if placed is False else ""))
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    ranges = ", ".join(f"{PET_ORGAN_NAMES[o]} {lo:.0f}-{hi:.0f}" for o, (lo, hi) in PET_PLAUSIBLE_ML.items())
    return "\n".join(lines) + (f"\n\nPlausible ranges (ml): {ranges}. Misplaced: against the organs' relative "
                                f"positions (`pet_placement`). No PET labels exist here: volumes, not Dice.\n")
