"""Pseudo-labels for a self-training row: the teachers' predictions of the target scans, the dual-stage filter of
training.selftrain, and the kept scans as training cases.

    WORK/btcv_stats.json           relative-volume statistics of the labelled CT (the filter's rule (b))
    WORK/rows/<row>/pseudo/
        pred/                      every teacher's prediction of each scan (training.selftrain predict, resumable)
        filtered/                  kept scans, consensus labels, table4.json/.md, filter_report.json, manifest.json
        labels/                    the training labels: the consensus, with IGNORE where the best teacher gives an
                                   organ outside the filter's organ set (those organs are not checked, so they are
                                   neither trusted as organ nor as background)

Each step is skipped when its output exists (manifest.json marks a finished filter); the test scans are never
read here.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from . import protocol
from .layout import target_folder
from .data import IGNORE
from .recipe import Profile


def _folder(work: Path, row: str) -> Path:
    return work / "rows" / row / "pseudo"


def pseudo_label(work: Path, prof: Profile, row: str, data: Path = protocol.REAL_DATA, device: str = "cpu",
                 threads: int | None = None, fresh: bool = False) -> Path:
    """Predict the target scans with the teachers' models (WORK/models/r<teacher>) and filter them; returns the
    filter's output folder. `fresh`: redo it all (the teachers may have changed), else reuse a finished one."""
    from training.selftrain.filtering import FilterConfig, run_filter
    from training.selftrain.labels import organ_set
    from training.selftrain.predict import PredictConfig, run_predict
    from training.selftrain.stats import compute_stats, save_stats

    st = prof.rows[row].selftrain
    missing = [t for t in st.teachers if not (work / "models" / f"r{t}" / "model.json").is_file()]
    if missing:
        raise ValueError(f"row {row} learns from row(s) {missing}, not trained yet: run "
                         f"`python -m training.inplane run --row {missing[0]}` first")
    base = _folder(work, row)
    filtered = base / "filtered"
    if fresh and base.exists():
        shutil.rmtree(base)
    if (filtered / "manifest.json").is_file():
        return filtered
    folders = [data / "ct_btcv" / "labelsTr"]
    if set(organ_set(st.organ_set)) - set(protocol.DATASET_ORGANS["btcv"]):   # the duodenum: BTCV has none
        folders.append(data / protocol.FLARE22_MAPS)
    stats = work / ("btcv_stats.json" if len(folders) == 1 else "btcv_flare22_stats.json")
    if not stats.is_file():
        save_stats(compute_stats(folders, progress=False), stats)
    done = run_predict(PredictConfig(images=target_folder(work, data), weights_dir=work / "models",
                                     models=tuple(f"r{t}" for t in st.teachers), out=base / "pred",
                                     target_spacing_xyz_mm=None, modality="mri", device=device, threads=threads,
                                     progress=False))
    if done.failed:
        raise ValueError(f"pseudo-labels of row {row}: {len(done.failed)} scan(s) failed, e.g. "
                         f"{next(iter(done.failed.values()))}")
    run_filter(FilterConfig(predictions=base / "pred", stats=stats, target_set=st.organ_set, out=filtered,
                            dice_threshold=st.dice_threshold, n_sigma=st.n_sigma, top_k=st.top_k,
                            no_majority_label=IGNORE, overwrite=True, progress=False))
    return filtered


def pseudo_cases(work: Path, prof: Profile, row: str) -> list[protocol.Case]:
    """The kept target scans as training cases (image, training label), writing the training labels first."""
    from inference.io import write_labels
    from training.selftrain.filtering import read_prediction

    st = prof.rows[row].selftrain
    base = _folder(work, row)
    manifest = json.loads((base / "filtered" / "manifest.json").read_text())
    (base / "labels").mkdir(parents=True, exist_ok=True)
    out = []
    for entry in manifest["cases"]:
        name = entry["case"]
        label = base / "labels" / f"{name}.nii.gz"
        if not label.is_file():
            ref, consensus = read_prediction(base / "filtered" / entry["label"])
            _, best = read_prediction(base / "pred" / f"r{st.teachers[0]}" / f"{name}.nii.gz", consensus.shape)
            write_labels(training_label(consensus, best, st.organ_set), ref, label)
        out.append(protocol.Case(name, base / "filtered" / entry["image"], label))
    return out


def training_label(consensus: np.ndarray, best: np.ndarray, set_name: str) -> np.ndarray:
    """The training label of a kept scan: the teachers' consensus, with IGNORE wherever the best teacher gives an
    organ outside the filter's organ set `set_name` (such organs were not checked)."""
    from training.selftrain.labels import organ_set

    checked = np.zeros(256, dtype=bool)
    checked[[0, IGNORE, *organ_set(set_name)]] = True
    out = consensus.copy()
    out[~checked[best]] = IGNORE
    return out
