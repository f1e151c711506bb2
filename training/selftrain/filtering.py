"""Dual-stage pseudo-label filtering and the training-ready output folder.

Stage 1, sample-wise, on the predictions of the BEST model (the first of the model list), in this order:
  (a) class number: every organ of the target set has at least `min_voxels` voxels;
  (b) relative volume: every R_c lies within mu_c +- n_sigma * sigma_c of the labelled CT (stats.json);
  (c) agreement: mean foreground Dice between the best and the second-best model's predictions >= the threshold;
      of the cases passing (a), (b) and (c), the top-k by that Dice are kept (k = None: all of them).
Stage 2, voxel-wise: the N models' predictions (restricted to the set's organs) are majority-voted per class
(> N/2); that consensus is the pseudo-label.

Output folder (OUT)::

    OUT/images/<case>_0000.nii.gz   the image the models saw (CT-median spacing unless predicted natively)
    OUT/labels/<case>.nii.gz        consensus label map, uint8, FLARE numbering (PET: 1, 2, 3, 13 only)
    OUT/manifest.json               written LAST: what the training conversion reads (see README.md)
    OUT/table4.json, table4.md      samples surviving each filter (the paper's Table 4)
    OUT/filter_report.json          every case's measurements and the first rule it failed
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from eval.dice import dice_per_label
from inference.atomic import copy_file, write_json, write_text
from inference.model_folder import sha256_of

if TYPE_CHECKING:   # annotations only: SimpleITK is imported where files are read
    import SimpleITK as sitk

from . import labels as L
from .stats import SetStats, load_stats
from .table4 import Table4Row, format_table4, table4_row  # noqa: F401 (importers use this module, their old home)

# SimpleITK is imported where files are read: the rules also serve arrays in memory (training/inplane/packed.py)

MANIFEST_FORMAT = "flare-uda selftrain pseudo-labels v1"
DEFAULT_DICE_THRESHOLD = {"mri": 0.9, "pet": 0.82, "mri_large": 0.9}
# the scans' modality of each target set, by default (--scan-modality names one of mri / pet)
SET_MODALITY = {"mri": "MRI", "pet": "PET", "mri_large": "MRI"}
SCAN_MODALITIES = ("mri", "pet")


# (constants, an error type and a typed config: the layout of inference/config.py's head, other content)
class FilterError(ValueError):
    """Unusable predictions folder, statistics or output folder; the message names the file."""


@dataclass(frozen=True)
class FilterConfig:
    predictions: Path
    stats: Path
    target_set: str  # "mri" | "pet" | "mri_large" (9 organs, MRI scans): the organ set and its statistics
    out: Path
    scan_modality: str | None = None  # "mri" | "pet": the scans' modality in the records (None: the set's own)
    top_k: int | None = None  # None: keep every case above the threshold
    dice_threshold: float | None = None  # None: the set's default (0.9 MRI, 0.82 PET)
    n_sigma: float = 3.0
    min_voxels: int = 1
    images: Path | None = None  # where to find <case>_0000.nii.gz when the predictions used the native scan
    no_majority_label: int = 0  # label of voxels without a strict majority (0 = background)
    overwrite: bool = False
    compression: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        L.organ_set(self.target_set)
        if self.scan_modality is not None and self.scan_modality not in SCAN_MODALITIES:
            raise FilterError(f"--scan-modality {self.scan_modality!r}: must be one of {list(SCAN_MODALITIES)}")
        if self.top_k is not None and self.top_k < 1:
            raise FilterError(f"--top-k {self.top_k}: must be at least 1")
        if self.dice_threshold is not None and not 0.0 <= self.dice_threshold <= 1.0:
            raise FilterError(f"--dice-threshold {self.dice_threshold}: must be in [0, 1]")
        if self.n_sigma <= 0:
            raise FilterError(f"--n-sigma {self.n_sigma}: must be positive")
        if not 0 <= self.no_majority_label <= 255 or self.no_majority_label in L.organ_set(self.target_set):
            raise FilterError(f"--no-majority-label {self.no_majority_label}: must be 0..255 and not an organ label")

    @property
    def modality(self) -> str:
        """The records' modality ("MRI" / "PET") this filter reads."""
        return SET_MODALITY[self.scan_modality or self.target_set]

    @property
    def threshold(self) -> float:
        return DEFAULT_DICE_THRESHOLD[self.target_set] if self.dice_threshold is None else self.dice_threshold


@dataclass
class CaseResult:
    case: str
    missing_organs: list[int]
    relative_volume: dict[int, float]
    out_of_range: dict[int, list[float]]  # organ -> [R_c, low, high] for the organs outside their interval
    dice_per_organ: dict[int, float]      # eval.dice: NaN where the organ is in neither map
    mean_dice: float
    passed_class: bool = False
    passed_volume: bool = False
    above_threshold: bool = False
    selected: bool = False
    rank: int | None = None  # 1-based rank by Dice among the cases passing (a), (b) and (c)

    @property
    def failed_rule(self) -> str | None:
        if not self.passed_class:
            return f"class number: missing organs {self.missing_organs}"
        if not self.passed_volume:
            return "relative volume: " + ", ".join(f"organ {o} R={r:.4g} not in [{lo:.4g}, {hi:.4g}]"
                                                   for o, (r, lo, hi) in self.out_of_range.items())
        if not self.above_threshold:
            return f"Dice {self.mean_dice:.4f} below the threshold"
        if not self.selected:
            return f"Dice rank {self.rank} outside the top-k"
        return None


# ---- stage 1 -------------------------------------------------------------------------------------------------

def sample_measures(best: np.ndarray, second: np.ndarray, stats: SetStats, n_sigma: float, min_voxels: int = 1,
                    case: str = "") -> CaseResult:
    """Rules (a) and (b) on the best model's labels and the Dice of (c) between the two best models' labels."""
    organs = stats.organs
    best, second = L.restrict(best, organs), L.restrict(second, organs)
    missing = L.missing_organs(best, organs, min_voxels)
    rv = L.relative_volumes(best, organs)
    bounds = {organ: stats.bounds(organ, n_sigma) for organ in rv}
    out_of_range = {organ: [r, *bounds[organ]] for organ, r in rv.items()
                    if not bounds[organ][0] <= r <= bounds[organ][1]}
    dpo = dice_per_label(best, second, organs)
    values = [v for v in dpo.values() if not np.isnan(v)]
    return CaseResult(case=case, missing_organs=missing, relative_volume=rv, out_of_range=out_of_range,
                      dice_per_organ=dpo, mean_dice=float(np.mean(values)) if values else 1.0,
                      passed_class=not missing, passed_volume=not missing and not out_of_range)


def select_top_k(results: list[CaseResult], threshold: float, top_k: int | None) -> list[CaseResult]:
    """Mark (in place) the cases passing (a) and (b) with Dice >= threshold, rank them by Dice (ties: case name),
    select the first `top_k` (all when None). Returns the selected results in rank order."""
    for r in results:
        r.above_threshold = r.passed_volume and r.mean_dice >= threshold
        r.selected, r.rank = False, None
    ranked = sorted((r for r in results if r.above_threshold), key=lambda r: (-r.mean_dice, r.case))
    for i, r in enumerate(ranked, start=1):
        r.rank = i
        r.selected = top_k is None or i <= top_k
    return [r for r in ranked if r.selected]


def rank_cases(names: list[str], load_two, set_stats: SetStats, n_sigma: float, min_voxels: int, threshold: float,
               top_k: int | None, progress: bool = False, desc: str = "stage 1"
               ) -> tuple[list[CaseResult], list[CaseResult]]:
    """Stage 1 over `names`: `load_two(name)` gives the best and the second-best model's label maps of a case.
    Returns every case's result and the selected ones in rank order."""
    results = [sample_measures(*load_two(n), set_stats, n_sigma, min_voxels, case=n)
               for n in tqdm(names, desc=desc, unit="case", disable=not progress)]
    return results, select_top_k(results, threshold, top_k)


def vote(preds: list[np.ndarray], organs, no_majority_label: int) -> np.ndarray:
    """Stage 2: the models' label maps (best first), restricted to `organs`, majority-voted per class."""
    return L.majority_vote([L.restrict(p, organs) for p in preds], organs, no_majority_label)


def write_report(out: Path, target_set: str, row: Table4Row, results: list[CaseResult], ignored: int = 0) -> None:
    """OUT/filter_report.json (every case's measurements and the first rule it failed), table4.json / .md."""
    report = {"target_set": target_set, "ignored_other_modality_records": ignored, "table4": asdict(row),
              "cases": [{**asdict(r), "failed_rule": r.failed_rule} for r in results]}
    write_json(out / "filter_report.json", report, indent=1, mkdir=True, default=str)
    write_json(out / "table4.json", asdict(row), indent=1, mkdir=True)
    write_text(out / "table4.md", format_table4([row]) + "\n")


# ---- reading the predictions folder --------------------------------------------------------------------------

@dataclass
class CaseFiles:
    case: str
    image: Path
    labels: list[Path]  # one per model, in model order
    record: dict = field(default_factory=dict)


def load_records(pred: Path, modality: str, images: Path | None) -> tuple[list[CaseFiles], list[dict], int]:
    """Cases of `modality` ("MRI" / "PET") in the predictions folder, the model list they share, and how many
    other-modality records were ignored."""
    from .predict import RECORD_FORMAT

    rec_dir = Path(pred) / "records"
    if not rec_dir.is_dir():
        raise FilterError(f"{pred}: not a predictions folder of `python -m training.selftrain predict` "
                          "(no records/ sub-folder)")
    cases: list[CaseFiles] = []
    ignored = 0
    for path in sorted(rec_dir.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FilterError(f"{path}: unreadable prediction record ({exc})") from None
        if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
            raise FilterError(f"{path}: not a prediction record ({RECORD_FORMAT!r} expected)")
        if rec["modality"] != modality:
            ignored += 1
            continue
        key = [(m["name"], m["card_sha256"]) for m in rec["models"]]
        first = cases[0].record if cases else rec
        if key != [(m["name"], m["card_sha256"]) for m in first["models"]]:
            raise FilterError(f"{path}: predicted with models {[k[0] for k in key]} but {first['case']} with "
                              f"{[m['name'] for m in first['models']]} (or different weights): rerun predict with "
                              "one list")
        image = Path(pred) / rec["image"]  # an absolute path (the source scan, predicted natively) stays as it is
        if images is not None and Path(rec["image"]).is_absolute():
            image = Path(images) / Path(rec["source_image"]).name
        labels = [Path(pred) / m["label"] for m in rec["models"]]
        for p in [image] + labels:
            if not p.is_file():
                raise FilterError(f"{p}: listed by {path} but missing")
        cases.append(CaseFiles(case=rec["case"], image=image, labels=labels, record=rec))
    if not cases:
        raise FilterError(f"{pred}: no finished {modality} case in the predictions folder"
                          + (f" ({ignored} record(s) of another modality)" if ignored else ""))
    models = cases[0].record["models"]
    if len(models) < 2:
        raise FilterError(f"{pred}: the predictions come from {len(models)} model(s); the filter needs the best and "
                          "the second-best")
    return cases, models, ignored


def read_prediction(path: Path, shape: tuple[int, ...] | None = None) -> tuple["sitk.Image", np.ndarray]:
    from inference.io import read_label_map

    try:
        image, arr = read_label_map(path, what="predicted label map")
    except ValueError as exc:
        raise FilterError(str(exc)) from None
    if shape is not None and arr.shape != tuple(shape):
        raise FilterError(f"{path}: label map of shape {arr.shape} (z, y, x), the case's other maps are {shape}")
    return image, arr


# ---- stage 2 and the output folder ---------------------------------------------------------------------------

def _prepare_out(cfg: FilterConfig) -> set[str]:
    """Create OUT/images and OUT/labels; return the files an earlier run listed (to replace) with --overwrite."""
    out = Path(cfg.out)
    manifest = out / "manifest.json"
    old: set[str] = set()
    if manifest.is_file():
        if not cfg.overwrite:
            raise FilterError(f"{manifest}: the output folder holds an earlier filter run (use --overwrite)")
        try:
            old = {f for c in json.loads(manifest.read_text())["cases"] for f in (c["image"], c["label"])}
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise FilterError(f"{manifest}: unreadable earlier manifest ({exc}); remove the folder") from None
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        foreign = sorted({f"{sub}/{p.name}" for p in (out / sub).iterdir() if not p.name.startswith(".")} - old)
        if foreign:
            raise FilterError(f"{out / foreign[0]}: the output folder holds files no earlier manifest lists "
                              f"({len(foreign)}); choose an empty folder")
    return old


def run_filter(cfg: FilterConfig) -> tuple[Table4Row, list[CaseResult], dict]:
    """Stage 1 + stage 2 + output folder. Returns the Table-4 row, every case's result and the manifest."""
    stats_all = load_stats(cfg.stats)
    set_stats = stats_all.for_set(cfg.target_set, cfg.stats)
    organs = set_stats.organs
    cases, models, ignored = load_records(cfg.predictions, cfg.modality, cfg.images)
    old_files = _prepare_out(cfg)
    out = Path(cfg.out)

    import SimpleITK as sitk

    from inference.io import write_image_atomic, write_labels

    by_case = {cf.case: cf for cf in cases}

    def load(case: str, n: int | None = None) -> tuple[sitk.Image, list[np.ndarray]]:  # first n models' maps
        ref, best = read_prediction(by_case[case].labels[0])
        return ref, [best] + [read_prediction(p, best.shape)[1] for p in by_case[case].labels[1:n]]

    results, selected = rank_cases([cf.case for cf in cases], lambda case: load(case, 2)[1], set_stats,
                                   cfg.n_sigma, cfg.min_voxels, cfg.threshold, cfg.top_k, cfg.progress,
                                   f"stage 1 ({cfg.target_set})")
    row = table4_row(cfg.target_set, results, cfg.threshold, cfg.top_k)

    entries = []
    for res in tqdm(selected, desc=f"stage 2 vote ({cfg.target_set})", unit="case", disable=not cfg.progress):
        cf = by_case[res.case]
        ref, preds = load(res.case)
        consensus = vote(preds, organs, cfg.no_majority_label)
        image_rel, label_rel = f"images/{res.case}_0000.nii.gz", f"labels/{res.case}.nii.gz"
        img_info = sitk.ImageFileReader()
        img_info.SetFileName(str(cf.image))
        try:
            img_info.ReadImageInformation()
        except RuntimeError:
            raise FilterError(f"{cf.image}: unreadable image") from None
        if tuple(img_info.GetSize()) != tuple(ref.GetSize()):
            raise FilterError(f"{cf.image}: image size {img_info.GetSize()} differs from its predictions "
                              f"{ref.GetSize()} ({cf.labels[0]})")
        write_labels(consensus, ref, out / label_rel, cfg.compression)
        if cf.image.name.endswith(".nii.gz"):
            copy_file(cf.image, out / image_rel)
        else:
            write_image_atomic(sitk.ReadImage(str(cf.image)), out / image_rel, cfg.compression)
        counts = L.voxel_counts(consensus)
        entries.append({
            "case": res.case, "image": image_rel, "label": label_rel, "source_image": cf.record["source_image"],
            "modality": cf.record["modality"], "spacing_xyz_mm": cf.record["spacing_xyz_mm"],
            "mean_dice": round(res.mean_dice, 6), "rank": res.rank,
            "relative_volume": {str(k): round(v, 6) for k, v in res.relative_volume.items()},
            "no_majority_fraction": round(float(counts[cfg.no_majority_label]) / consensus.size, 6)
            if cfg.no_majority_label else 0.0,
            "organs_missing_after_vote": [o for o in organs if counts[o] == 0],
        })
    kept = {e["image"] for e in entries} | {e["label"] for e in entries}
    for stale in sorted(old_files - kept):
        (out / stale).unlink(missing_ok=True)

    manifest = {
        "format": MANIFEST_FORMAT,
        "target_set": cfg.target_set, "modality": cfg.modality,
        "channel_names": {"0": cfg.modality},
        "label_numbering": "FLARE",
        "labels": {"background": 0, **{L.ORGAN_NAMES[o]: o for o in organs}},
        "annotated_organs": list(organs),
        "no_majority_label": cfg.no_majority_label,
        "file_ending": ".nii.gz",
        "models": [{"role": "best" if i == 0 else "second" if i == 1 else "ensemble", "name": m["name"],
                    "path": m["path"], "card_sha256": m["card_sha256"]} for i, m in enumerate(models)],
        "filters": {"min_voxels": cfg.min_voxels, "n_sigma": cfg.n_sigma, "dice_threshold": cfg.threshold,
                    "top_k": cfg.top_k, "vote": f"> {len(models)}/2 of {len(models)} models per class"},
        "stats": {"path": str(Path(cfg.stats).resolve()), "sha256": sha256_of(cfg.stats),
                  "median_spacing_xyz_mm": list(stats_all.median_spacing_xyz_mm)},
        "predictions": str(Path(cfg.predictions).resolve()),
        "table4": asdict(row),
        "numTraining": len(entries),
        "cases": entries,
    }
    write_report(out, cfg.target_set, row, results, ignored)
    write_json(out / "manifest.json", manifest, indent=1, mkdir=True)
    return row, results, manifest


def load_table4(path: Path) -> Table4Row:
    path = Path(path)
    if path.is_dir():
        path = path / "table4.json"
    try:
        return Table4Row(**json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise FilterError(f"{path}: not a table4.json of `python -m training.selftrain filter` ({exc})") from None
