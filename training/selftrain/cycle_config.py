"""What defines a self-training cycle: its target sets, labelled sources and settings (`CycleConfig`), and the
label rules of its training set (nnU-Net's ignore label for partial pseudo-labels)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from training.c2f.config import C2FSpec
from training.c2f.convert import Source
from training.c2f.train import DEFAULT_TRAINER

from . import labels as L

SELFTRAIN_LR = 1e-6   # the seed's self-training learning rate
TARGET_SETS = ("mri", "pet")


class CycleError(ValueError):
    """The cycle cannot run or cannot go on; the message names the argument or file at fault."""


class PredictFailed(CycleError):
    """Some scans could not be predicted; a rerun retries them."""


@dataclass(frozen=True)
class TargetSet:
    """Unlabelled scans of one target set: `NAME=IMAGES_DIR:SET[:MODALITY]`. SET (mri | pet) is the organ set the
    pseudo-labels keep and the filter's statistics; MODALITY (mri | pet) is what the scans are, i.e. the engine's
    path and the records the filter reads; it defaults to the set's own (e.g. `chaos=DIR:pet:mri`: MRI scans
    whose pseudo-labels keep only the four PET organs)."""

    name: str
    images: Path
    target_set: str  # "mri" | "pet" (organ set, filter statistics)
    modality: str = ""  # "mri" | "pet": the scans' modality ("" -> target_set)

    def __post_init__(self) -> None:
        if not self.modality:
            object.__setattr__(self, "modality", self.target_set)

    @classmethod
    def parse(cls, text: str) -> "TargetSet":
        if "=" not in text or ":" not in text.split("=", 1)[1]:
            raise CycleError(f"--targets {text!r}: expected NAME=IMAGES_DIR:mri|pet[:mri|pet]")
        name, rest = text.split("=", 1)
        folder, kind = rest.rsplit(":", 1)
        modality = kind
        head = folder.rsplit(":", 1)
        if len(head) == 2 and head[1] in TARGET_SETS and head[0]:   # NAME=DIR:SET:MODALITY
            folder, kind = head
        if kind not in TARGET_SETS or modality not in TARGET_SETS:
            raise CycleError(f"--targets {text!r}: the set (and modality) after ':' must be one of {TARGET_SETS}")
        _check_name(name, "--targets")
        return cls(name=name, images=Path(folder), target_set=kind, modality=modality)


def _check_name(name: str, what: str) -> None:
    if not name or not name.replace("-", "").isalnum():
        raise CycleError(f"{what}: name {name!r} must be alphanumeric (dashes allowed): it prefixes training cases")


def parse_labelled(text: str, default_name: str | None = None, what: str = "--synthetic") -> Source:
    """`[NAME=]IMAGES_DIR,LABELS_DIR` -> c2f Source (NAME required unless `default_name`)."""
    if "=" in text:
        name, folders = text.split("=", 1)
    elif default_name is not None:
        name, folders = default_name, text
    else:
        raise CycleError(f"{what} {text!r}: expected NAME=IMAGES_DIR,LABELS_DIR")
    parts = folders.split(",")
    if len(parts) != 2 or not all(parts):
        raise CycleError(f"{what} {text!r}: expected {'' if default_name else 'NAME='}IMAGES_DIR,LABELS_DIR")
    _check_name(name, what)
    return Source(name=name, images=Path(parts[0]), labels=Path(parts[1]))


@dataclass(frozen=True)
class CycleConfig:
    work: Path
    ct: Source
    targets: tuple[TargetSet, ...]
    weights: Path  # folder holding the model folders (inputs and the new model)
    best: str  # model folder names under `weights` (or paths); the best model's weights start the training
    second: str
    out_model: str  # new model folder name under `weights`
    stats: Path  # `python -m training.selftrain stats` output for the labelled CT
    synthetic: tuple[Source, ...] = ()
    extras: tuple[str, ...] = ()
    spec: C2FSpec | None = None  # None: training.c2f's default spec
    trainer: str = DEFAULT_TRAINER
    epochs: int | None = None  # None: the trainer's (200 x 250 iterations)
    iterations: int | None = None
    val_iterations: int | None = None
    lr: float = SELFTRAIN_LR
    time_budget_s: float | None = None  # per stage: fewer epochs when they would overrun (c2f train --time-budget)
    # filter settings (one for every target set; None = the set's default)
    top_k: int | None = None
    dice_threshold: float | None = None
    n_sigma: float = 3.0
    no_majority_label: int = 0
    native_spacing: bool = False
    dataset_id: int = 501
    onnx: bool = True
    # execution only (not part of what defines the cycle)
    device: str = "cuda"
    num_gpus: int = 1
    workers: int = 1  # conversion / preprocessing processes
    da_workers: int | None = None  # nnU-Net data augmentation processes (0: in the main process)
    threads: int | None = None  # torch CPU threads
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.targets:
            raise CycleError("--targets: at least one target set is needed")
        names = [self.ct.name] + [s.name for s in self.synthetic] + [t.name for t in self.targets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CycleError(f"source names repeat: {dup} (ct, --synthetic and --targets names must differ)")
        if self.device not in ("cpu", "cuda"):
            raise CycleError(f"--device {self.device!r}: cpu or cuda")
        if self.num_gpus < 1 or (self.num_gpus > 1 and self.device != "cuda"):
            raise CycleError(f"--num-gpus {self.num_gpus}: >= 1, and > 1 only with --device cuda")
        if "/" in self.out_model or self.out_model in ("", ".", ".."):
            raise CycleError(f"--out-model {self.out_model!r}: a folder name (written under --weights)")
        models = [Path(m).name for m in (self.best, self.second, *self.extras)]
        if self.out_model in models:
            raise CycleError(f"--out-model {self.out_model!r} is one of the input models: name a new folder")


def training_spec(spec: C2FSpec, targets: tuple[TargetSet, ...], no_majority_label: int) -> C2FSpec:
    """The spec the cycle trains with: `spec` plus nnU-Net's ignore label (max class + 1) when a PET set (partial
    labels) or a non-zero no-majority label needs it."""
    ignore = max(spec.class_ids) + 1 if spec.ignore_label is None else spec.ignore_label
    if no_majority_label not in (0, ignore):
        raise CycleError(f"--no-majority-label {no_majority_label}: 0 (background) or {ignore} (the ignore label)")
    needs = no_majority_label != 0 or any(t.target_set == "pet" for t in targets)
    if not needs or spec.ignore_label is not None:
        return spec
    return replace(spec, labels={**spec.labels, "ignore": ignore})


def train_labels(label: np.ndarray, target_set: str, no_majority_label: int, ignore: int | None) -> np.ndarray:
    """A filtered pseudo-label as it is trained: PET -> every voxel outside the annotated organs is `ignore`;
    a non-zero no-majority label -> `ignore`. Values outside the set's organs (and its no-majority label) are an
    error."""
    organs = L.organ_set(target_set)
    allowed = {0, *organs} | ({no_majority_label} if no_majority_label else set())
    bad = sorted(set(np.unique(label).tolist()) - allowed)
    if bad:
        raise CycleError(f"pseudo-label holds labels {bad} outside the {target_set} set {sorted(allowed)}")
    out = label.astype(np.uint8, copy=True)
    if target_set == "pet":
        out[~np.isin(label, organs)] = ignore
    elif no_majority_label:
        out[label == no_majority_label] = ignore
    return out
