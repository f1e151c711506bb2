"""Pseudo-label generation: every unlabelled scan -> one label map per model, sharded and resumable.

Layout of the predictions folder (PRED)::

    PRED/images/<case>_0000.nii.gz   the scan resampled to the CT median spacing (absent when it already had it,
                                     or with native spacing: the record then points to the source scan)
    PRED/<model>/<case>.nii.gz       uint8 label map of each model, FLARE numbering, on the grid of the image above
    PRED/records/<case>.json         written LAST for a case: the case is finished when its record exists, names
                                     the same models (name + sha256 of model.json) and the same target spacing,
                                     and every file it lists exists. Anything else is recomputed from scratch.

Models are given in order: best, second-best checkpoint, then any extra ensemble members. Each is a model folder
(`<weights>/<name>/model.json`, or a path to such a folder). Cases are the `<case>_0000.nii.gz` files of the
image folder sorted by case name; shard K of N (1 <= K <= N) takes the cases at sorted positions i with
i % N == K - 1, so the N shards cover every case exactly once whatever the number of cases.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from inference.atomic import read_json, write_json
from inference.backends import BackendError
from inference.config import CARD_NAME, ModelCardError
from inference.model_folder import load_model_folder, sha256_of
from inference.io import InputError, LoadedImage, read_image, write_image_atomic, write_labels
from inference.modality import case_name, modality_of
from inference.pipeline import CaseRecord, EngineOptions, Segmenter

from . import labels as L
from .geometry import physical_spacing_xyz, resample_to_spacing, same_spacing

RECORD_FORMAT = "flare-uda selftrain prediction v1"
MODALITY_CHOICES = ("auto", "mri", "pet")


class PredictError(ValueError):
    """The run cannot start (bad image folder, bad model list, bad shard); the message names the culprit."""


@dataclass(frozen=True)
class PredictConfig:
    images: Path
    weights_dir: Path
    models: tuple[str, ...]  # best, second-best, extra ensemble members: names under weights_dir or folder paths
    out: Path
    target_spacing_xyz_mm: tuple[float, float, float] | None  # None: predict on the native grid
    shard: tuple[int, int] = (1, 1)  # (K, N), 1-based
    modality: str = "auto"  # auto (from the file name: fdg/psma/pet -> PET) | mri | pet
    device: str = "auto"
    backend: str = "auto"
    threads: int | None = None
    compression: int = 1
    progress: bool = True


@dataclass(frozen=True)
class ModelRef:
    name: str  # output sub-folder name (the model folder's name)
    path: Path  # model folder
    card_sha256: str
    modalities: tuple[str, ...]


@dataclass
class PredictSummary:
    shard_cases: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished by an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # case -> reason


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N."""
    try:
        k, n = map(int, text.split("/"))
    except ValueError:
        raise PredictError(f"--shard {text!r}: expected K/N with integers, e.g. 3/10") from None
    if n < 1 or not 1 <= k <= n:
        raise PredictError(f"--shard {text!r}: shards are numbered 1..N (K={k}, N={n})")
    return k, n


def shard_cases(cases: list[str], k: int, n: int) -> list[str]:
    """Cases of shard K of N: sorted positions i with i % N == K - 1 (round-robin, balanced to within one)."""
    return [c for i, c in enumerate(sorted(cases)) if i % n == k - 1]


def find_images(folder: Path) -> dict[str, Path]:
    """case -> image path for every `<case>_0000.nii.gz` (or .nii) directly in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictError(f"{folder}: image folder does not exist")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        case = case_name(p) if p.is_file() and not p.name.startswith(".") else None
        if case is None:
            continue
        if case in found:
            raise PredictError(f"{p}: case {case!r} is also given by {found[case].name}")
        found[case] = p
    if not found:
        raise PredictError(f"{folder}: no <case>_0000.nii.gz image in the image folder")
    return found


def resolve_models(weights_dir: Path, models: tuple[str, ...]) -> list[ModelRef]:
    """Model references in the given order; at least two (best, second-best); distinct folder names."""
    if len(models) < 2:
        raise PredictError(f"--models {','.join(models)}: at least two models are needed "
                           "(best and second-best checkpoint; add ensemble members for the vote)")
    refs: list[ModelRef] = []
    for spec in models:
        path = Path(spec)
        folder = path if (path.is_absolute() or len(path.parts) > 1) else Path(weights_dir) / spec
        try:
            loaded = load_model_folder(folder, verify=True)
        except ModelCardError as exc:
            raise PredictError(f"model {spec!r}: {exc}") from None
        refs.append(ModelRef(name=folder.name, path=folder.resolve(), card_sha256=sha256_of(folder / CARD_NAME),
                             modalities=loaded.card.modalities))
    names = [r.name for r in refs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PredictError(f"--models: model folder name(s) {dup} given twice (outputs are stored by folder name)")
    return refs


def engine_modality(path: Path, choice: str) -> str:
    if choice == "auto":
        return modality_of(path)
    if choice not in MODALITY_CHOICES:
        raise PredictError(f"--modality {choice!r}: expected one of {MODALITY_CHOICES}")
    return choice.upper()


def _record_path(out: Path, case: str) -> Path:
    return out / "records" / f"{case}.json"


def is_finished(out: Path, case: str, models: list[ModelRef], target_spacing) -> bool:
    """True when an earlier run wrote this case completely with the same models and the same target spacing."""
    rec = read_json(_record_path(out, case))
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT or rec.get("case") != case:
        return False
    if [(m["name"], m["card_sha256"]) for m in rec.get("models", [])] != [(m.name, m.card_sha256) for m in models]:
        return False
    want = None if target_spacing is None else [float(v) for v in target_spacing]
    if rec.get("target_spacing_xyz_mm") != want:
        return False
    image = out / rec["image"]  # an absolute path (the source scan, predicted natively) stays as it is
    return image.is_file() and all((out / m["label"]).is_file() for m in rec["models"])


def _prepare_image(source: Path, case: str, cfg: PredictConfig) -> tuple[LoadedImage, str, list[str]]:
    """The image the models see (resampled to the target spacing when needed) and where it is stored."""
    loaded = read_image(source)
    notes = list(loaded.notes)
    if cfg.target_spacing_xyz_mm is None or same_spacing(physical_spacing_xyz(loaded.image),
                                                         cfg.target_spacing_xyz_mm):
        return loaded, str(source.resolve()), notes
    clean = sitk.GetImageFromArray(np.ascontiguousarray(loaded.array))  # NaN/Inf already replaced by read_image
    clean.CopyInformation(loaded.image)
    resampled = resample_to_spacing(clean, cfg.target_spacing_xyz_mm)
    rel = f"images/{case}_0000.nii.gz"
    write_image_atomic(resampled, cfg.out / rel, cfg.compression)
    notes.append(f"resampled {tuple(round(s, 3) for s in loaded.image.GetSpacing())} -> "
                 f"{tuple(round(s, 3) for s in resampled.GetSpacing())} mm (index order)")
    return LoadedImage(image=resampled, array=sitk.GetArrayViewFromImage(resampled)), rel, notes


def build_record(case: str, modality: str, source: Path, image_ref: str, image: sitk.Image, target_spacing,
                 models: list[dict], notes: list[str], seconds: float) -> dict:
    """The record of a finished case. `models` entries: name, path, card_sha256, label (relative to PRED), ..."""
    return {
        "format": RECORD_FORMAT, "case": case, "modality": modality, "source_image": str(Path(source).resolve()),
        "image": image_ref, "size_xyz": list(image.GetSize()),
        "spacing_xyz_mm": [round(v, 6) for v in physical_spacing_xyz(image)],
        "target_spacing_xyz_mm": None if target_spacing is None else [float(v) for v in target_spacing],
        "label_numbering": "FLARE", "models": models, "notes": notes, "seconds": round(seconds, 3),
    }


def write_record(record: dict, out: Path) -> None:
    write_json(_record_path(Path(out), record["case"]), record, indent=1, mkdir=True)


def predict_case(case: str, source: Path, modality: str, segmenters: dict[str, Segmenter], models: list[ModelRef],
                 cfg: PredictConfig) -> dict:
    """Predict one case with every model, write its label maps, then its record (last). Returns the record."""
    t0 = time.perf_counter()
    loaded, image_ref, notes = _prepare_image(source, case, cfg)
    entries = []
    for ref in models:
        t = time.perf_counter()
        rec = CaseRecord(case=case)
        labels = segmenters[ref.name].segment(loaded, modality, rec)
        if modality == "PET":  # the engine writes PET numbering; pseudo-labels are FLARE-numbered everywhere
            labels = L.flare_from_pet(labels)
        rel = f"{ref.name}/{case}.nii.gz"
        write_labels(labels, loaded.image, cfg.out / rel, cfg.compression)
        entries.append({"name": ref.name, "path": str(ref.path), "card_sha256": ref.card_sha256, "label": rel,
                        "seconds": round(time.perf_counter() - t, 3), "backend": rec.backend, "device": rec.device,
                        "organ_volumes_ml": {str(L.FLARE_FROM_PET[k] if modality == "PET" else k): v
                                             for k, v in rec.organ_volumes_ml.items()}})
    record = build_record(case, modality, source, image_ref, loaded.image, cfg.target_spacing_xyz_mm, entries,
                          notes, time.perf_counter() - t0)
    write_record(record, cfg.out)
    return record


def run_predict(cfg: PredictConfig) -> PredictSummary:
    """Predict the shard's unfinished cases. Raises PredictError when the run cannot start."""
    images = find_images(cfg.images)
    k, n = cfg.shard
    models = resolve_models(cfg.weights_dir, cfg.models)
    summary = PredictSummary(shard_cases=shard_cases(list(images), k, n))
    modalities = {c: engine_modality(images[c], cfg.modality) for c in summary.shard_cases}
    for ref in models:
        lacking = sorted(set(modalities.values()) - set(ref.modalities))
        if lacking:
            raise PredictError(f"model {ref.path}: does not serve {lacking} (its card lists {list(ref.modalities)})")
    for sub in ["records", "images"] + [m.name for m in models]:
        (cfg.out / sub).mkdir(parents=True, exist_ok=True)
    todo = []
    for case in summary.shard_cases:
        (summary.skipped if is_finished(cfg.out, case, models, cfg.target_spacing_xyz_mm) else todo).append(case)
    segmenters = {ref.name: Segmenter(EngineOptions(weights_dir=ref.path.parent, model=ref.path.name,
                                                    device=cfg.device, backend=cfg.backend, threads=cfg.threads))
                  for ref in models}
    bar = tqdm(todo, desc=f"pseudo-labels shard {k}/{n}", unit="case", disable=not cfg.progress)
    bar.set_postfix(skipped=len(summary.skipped), failed=0)
    for case in bar:
        try:
            predict_case(case, images[case], modalities[case], segmenters, models, cfg)
        except InputError as exc:
            summary.failed[case] = f"{images[case]}: {exc}"
        except (MemoryError, RuntimeError, OSError, ValueError) as exc:
            if isinstance(exc, (ModelCardError, BackendError)):  # the run, not the case, is broken
                raise PredictError(str(exc)) from None
            summary.failed[case] = f"{images[case]}: {type(exc).__name__}: {exc}"
        else:
            summary.predicted.append(case)
        bar.set_postfix(skipped=len(summary.skipped), failed=len(summary.failed))
    return summary
