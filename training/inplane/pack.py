"""A compact preprocessed copy of the benchmark's training and curve volumes, for a machine without the data.

The GPU machine lent to a session receives at most 64 MiB, and the 30 BTCV scans alone are 95 MB as NIfTI. A pack
holds every volume a profile trains on (all rows' sources) and the test volumes of the learning curve on the
profile's finest in-plane grid, as prepared by `data.load_volume`: images as uint8 in [0, 1] (BTCV is an 8-bit CT
window from its publisher; the step of 1/255 is below the noise of either modality), labels and region maps as
they are, LZMA-compressed (~45 MB for the `cpu` / `gpu` profiles). A coarser grid is made on loading with the
engine's resampling from the packed one (linear for images, nearest for labels and regions): two resampling steps
instead of the engine's one, a small difference that only the coarse stage (its ROI) sees.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from inference.atomic import atomic_path
from inference import resample

from . import protocol
from .data import Volume, load_volumes, organ_box
from .recipe import as_profile


def _write(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    zf.writestr(name + ".npy", buf.getvalue())


def pack(out: Path, profile: str, data: Path = protocol.REAL_DATA) -> Path:
    """Write the pack of `profile` to `out` (.npz; temporary name, then rename)."""
    prof = as_profile(profile)
    fine = min((prof.coarse.spacing_mm, prof.fine.spacing_mm), key=lambda s: s[1] * s[2])
    # the real scans' sources (a PET row renders its source from the BTCV labels in the work folder)
    sources = sorted({r.source for r in prof.rows.values() if r.source in ("btcv", "chaos_target")})
    todo = [protocol.source_cases(s, data) for s in sources] + [(protocol.test_cases(data), protocol.CHAOS_LABELS)]
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"spacing_mm": list(fine), "cases": {}}
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zf:
        for cases, label_ids in todo:
            for vol in load_volumes(cases, fine, label_ids):
                _write(zf, f"{vol.name}/image", np.round(vol.image.astype(np.float32) * 255).astype(np.uint8))
                _write(zf, f"{vol.name}/labels", vol.labels)
                _write(zf, f"{vol.name}/regions", vol.regions)
                meta["cases"][vol.name] = {"spacing_mm": vol.spacing_mm, "label_ids": list(vol.label_ids)}
        _write(zf, "meta", np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return out


def load_packed(path: Path, spacing_mm, cases: list[protocol.Case]) -> list[Volume]:
    """The volumes of `cases` on the grid of `spacing_mm` (the packed grid, or a coarser one made from it)."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        out = []
        for case in cases:
            if case.name not in meta["cases"]:
                raise ValueError(f"{path}: case {case.name} is not in the pack")
            m = meta["cases"][case.name]
            image = z[f"{case.name}/image"].astype(np.float32) / 255
            labels, regions = z[f"{case.name}/labels"], z[f"{case.name}/regions"]
            spacing = tuple(m["spacing_mm"])
            if tuple(spacing_mm[1:]) != tuple(meta["spacing_mm"][1:]):
                shape = resample.shape_at_spacing(image.shape, spacing, spacing_mm)
                image = resample.resample_linear(image, shape)
                labels = resample.labels_to_shape(labels, shape)
                regions = resample.labels_to_shape(regions, shape)
                spacing = tuple(s if t is None else float(t) for s, t in zip(spacing, spacing_mm))
            out.append(Volume(case.name, image.astype(np.float16), labels, regions, spacing, organ_box(labels),
                              tuple(m["label_ids"])))
    return out
