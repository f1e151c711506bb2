"""A compact preprocessed copy of the benchmark's volumes, for a machine without the data.

The GPU machine lent to a session receives at most 64 MiB and has no SimpleITK, and the 30 BTCV scans alone are
95 MB as NIfTI. A pack holds every volume a profile learns from (all rows' real sources, the unlabelled target
scans) and the test volumes of the learning curve on the profile's finest in-plane grid, as prepared by
`data.load_volume`: images as uint8 in [0, 1] (BTCV is an 8-bit CT window from its publisher; the step of 1/255 is
below the noise of either modality), labels and region maps as they are, each scan's intensity window (so the
scan's own intensities come back, `Volume.raw`, for the translator and the teachers' engine), which cases form
which set, and the relative-volume statistics of the labelled CT (the self-training filter's rule (b), computed
from the original label maps). LZMA-compressed (~41 MB for the `cpu` / `gpu` profiles).

A coarser grid is made on loading with the engine's resampling from the packed one (linear for images, nearest for
labels and regions): two resampling steps instead of the engine's one, a small difference that only the coarse
stage (its ROI) sees. Volumes made on the GPU machine from the pack (translated CT, pseudo-labelled target scans,
PET renders: `packed.py`) are written in the same format, so every stage reads its volumes one way.
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
from .data import Volume, load_volume, organ_box
from .recipe import as_profile

FORMAT = "flare-uda inplane pack v3"


def _write(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    zf.writestr(name + ".npy", buf.getvalue())


def write_pack(out: Path, volumes: list[Volume], sets: dict[str, list[str]], extra: dict | None = None,
               compress: bool = True) -> Path:
    """Write `volumes` (all on one in-plane grid) as a pack: `sets` names which cases form which set (e.g.
    "btcv", "chaos_target", "test"); `extra` goes into the metadata as it is. `compress` False: stored as they
    are (packs that never travel: LZMA takes ~40 s for the 30 BTCV volumes on a CPU core, reading ~4 s).
    Temporary name, then rename."""
    if not volumes:
        raise ValueError(f"{out}: no volumes to pack")
    grid = volumes[0].spacing_mm[1:]
    if any(tuple(v.spacing_mm[1:]) != tuple(grid) for v in volumes):
        raise ValueError(f"{out}: the volumes are not on one in-plane grid")
    meta = {"format": FORMAT, "spacing_mm": [None, *grid], "sets": sets, "cases": {}, **(extra or {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_LZMA if compress else zipfile.ZIP_STORED
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=method) as zf:
        for vol in volumes:
            _write(zf, f"{vol.name}/image", np.round(vol.image.astype(np.float32) * 255).astype(np.uint8))
            _write(zf, f"{vol.name}/labels", vol.labels)
            _write(zf, f"{vol.name}/regions", vol.regions)
            meta["cases"][vol.name] = {"spacing_mm": list(vol.spacing_mm), "label_ids": list(vol.label_ids),
                                       "window": None if vol.window is None else list(vol.window)}
        _write(zf, "meta", np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return out


def stats_key(organ_set: str) -> str:
    """Which label maps the self-training filter's relative-volume statistics of `organ_set` come from: BTCV's,
    and the FLARE22 maps' too when the set holds an organ BTCV does not label (the duodenum)."""
    from training.selftrain.labels import organ_set as organs

    return "btcv" if set(organs(organ_set)) <= set(protocol.DATASET_ORGANS["btcv"]) else "btcv+flare22"


def contents(profile) -> dict:
    """What the pack of `profile` holds: its grid (the profile's finest), the sets of real scans (the rows'
    sources; the target scans for the translators and the self-training rows; BTCV for the PET renders; the test
    scans), whether the FLARE22 label maps (a row synthesises images from them) and which filter statistics."""
    prof = as_profile(profile)
    rows = prof.rows.values()
    sources = {r.source for r in rows if r.source in ("btcv", "chaos_target")}
    if any(r.synthetic or r.selftrain for r in rows):
        sources |= {"btcv", "chaos_target"}
    if any(r.source == "btcv_pet" for r in rows):
        sources.add("btcv")
    fine = min((prof.coarse.spacing_mm, prof.fine.spacing_mm), key=lambda s: s[1] * s[2])
    return {"format": FORMAT, "spacing_mm": list(fine), "sets": sorted(sources) + ["test"],
            "flare22": any(r.label_maps for r in rows),
            "stats": sorted({stats_key(r.selftrain.organ_set) for r in rows if r.selftrain})}


def pack(out: Path, profile, data: Path = protocol.REAL_DATA, compress: bool = True) -> Path:
    """Write the pack of `profile` (a name, a JSON path or a Profile) to `out` (.npz; temporary name, then
    rename): what `contents` names."""
    what = contents(profile)
    todo = {s: protocol.source_cases(s, data) for s in what["sets"] if s != "test"}
    todo["test"] = (protocol.test_cases(data), protocol.CHAOS_LABELS)
    fine = tuple(what["spacing_mm"])
    from tqdm import tqdm

    volumes = [load_volume(case, fine, label_ids) for cases, label_ids in todo.values()
               for case in tqdm(cases, desc=f"load at {list(fine)} mm", unit="case")]
    sets = {s: [c.name for c in cases] for s, (cases, _) in todo.items()}
    if what["flare22"]:
        from .labelmaps import label_map_files, map_volume

        maps = [map_volume(path, fine) for path in label_map_files(data)]
        volumes += maps
        sets["flare22"] = [m.name for m in maps]
    extra = {}
    if what["stats"]:
        from training.selftrain.stats import compute_stats

        folders = {"btcv": [data / "ct_btcv" / "labelsTr"],
                   "btcv+flare22": [data / "ct_btcv" / "labelsTr", data / protocol.FLARE22_MAPS]}
        extra["stats"] = {k: compute_stats(folders[k], progress=False).to_dict() for k in what["stats"]}
    return write_pack(out, volumes, sets, extra, compress)


def read_meta(path: Path) -> dict:
    """The pack's metadata (format, grid, sets, cases, extras)."""
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable pack ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: pack format {meta.get('format')!r}, expected {FORMAT!r} (make it again: "
                         f"python -m training.inplane pack)")
    return meta


def pack_grid(path: Path) -> tuple:
    """The pack's grid: (None, y, x) mm, the slices each scan's own."""
    return tuple(read_meta(path)["spacing_mm"])


def packed_set(path: Path, name: str) -> list[str]:
    """The case names of set `name` in the pack."""
    sets = read_meta(path)["sets"]
    if name not in sets:
        raise ValueError(f"{path}: the pack has no set {name!r} (sets: {sorted(sets)})")
    return list(sets[name])


def load_packed(path: Path, spacing_mm, cases: list) -> list[Volume]:
    """The volumes of `cases` (protocol.Case objects or names) on the grid of `spacing_mm` (the packed grid, or a
    coarser one made from it)."""
    meta = read_meta(path)
    with np.load(path) as z:
        out = []
        for case in cases:
            name = case if isinstance(case, str) else case.name
            if name not in meta["cases"]:
                raise ValueError(f"{path}: case {name} is not in the pack")
            m = meta["cases"][name]
            image = z[f"{name}/image"].astype(np.float32) / 255
            labels, regions = z[f"{name}/labels"], z[f"{name}/regions"]
            spacing = tuple(m["spacing_mm"])
            if tuple(spacing_mm[1:]) != tuple(meta["spacing_mm"][1:]):
                shape = resample.shape_at_spacing(image.shape, spacing, spacing_mm)
                image = resample.resample_linear(image, shape)
                labels = resample.labels_to_shape(labels, shape)
                regions = resample.labels_to_shape(regions, shape)
                spacing = tuple(s if t is None else float(t) for s, t in zip(spacing, spacing_mm, strict=True))
            window = None if m.get("window") is None else tuple(m["window"])
            out.append(Volume(name, image.astype(np.float16), labels, regions, spacing, organ_box(labels),
                              tuple(m["label_ids"]), window))
    return out
