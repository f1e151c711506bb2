"""A compact preprocessed copy of the benchmark's training and curve volumes, for a machine without the data.

The GPU machine lent to a session receives at most 64 MiB, and the 30 BTCV scans alone are 95 MB as NIfTI. A pack
holds every volume a profile trains on (all rows' sources) and the test volumes of the learning curve, on the
coarse and the fine grid, as prepared by `data.load_volume`; images are stored as uint8 in [0, 1] (BTCV is an 8-bit
CT window from its publisher; the step of 1/255 is below the noise of either modality), labels and region maps as
they are (both compress to little). About 55 MB for the `cpu` profile's grids.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import protocol
from .data import Volume, load_volumes
from .recipe import load_profile


def _grid_key(spacing_mm) -> str:
    return "x".join("native" if s is None else f"{float(s):g}" for s in spacing_mm)


def pack(out: Path, profile: str, data: Path = protocol.REAL_DATA) -> Path:
    """Write the pack of `profile` to `out` (.npz; temporary name, then rename)."""
    prof = load_profile(profile)
    arrays, meta = {}, {}
    sources = sorted({r.source for r in prof.rows.values()})
    for recipe in (prof.coarse, prof.fine):
        key = _grid_key(recipe.spacing_mm)
        if key in meta:
            continue
        meta[key] = {}
        todo = [protocol.source_cases(s, data) for s in sources] + [(protocol.test_cases(data),
                                                                     protocol.CHAOS_LABELS)]
        for cases, label_ids in todo:
            for vol in load_volumes(cases, recipe.spacing_mm, label_ids):
                arrays[f"{key}/{vol.name}/image"] = np.round(vol.image.astype(np.float32) * 255).astype(np.uint8)
                arrays[f"{key}/{vol.name}/labels"] = vol.labels
                arrays[f"{key}/{vol.name}/regions"] = vol.regions
                meta[key][vol.name] = {"spacing_mm": vol.spacing_mm, "organ_box": vol.organ_box,
                                       "label_ids": list(vol.label_ids)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out


def load_packed(path: Path, spacing_mm, cases: list[protocol.Case]) -> list[Volume]:
    """The volumes of `cases` on the grid of `spacing_mm` from the pack at `path`."""
    key = _grid_key(spacing_mm)
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        if key not in meta:
            raise ValueError(f"{path}: no volumes on the grid {key} (it holds {sorted(meta)})")
        out = []
        for case in cases:
            if case.name not in meta[key]:
                raise ValueError(f"{path}: case {case.name} is not in the pack's grid {key}")
            m = meta[key][case.name]
            image = z[f"{key}/{case.name}/image"].astype(np.float16) / np.float16(255)
            labels, regions = z[f"{key}/{case.name}/labels"], z[f"{key}/{case.name}/regions"]
            box = None if m["organ_box"] is None else tuple(tuple(v) for v in m["organ_box"])
            out.append(Volume(case.name, image, labels, regions, tuple(m["spacing_mm"]), box,
                              tuple(m["label_ids"])))
    return out
