"""One self-training cycle in one call: predict -> filter -> training labels -> c2f convert -> plan -> train coarse
and fine from the best model's weights -> export a new model folder. Every step is resumable.

    WORK/cycle.json                   state: the cycle's configuration and each finished step (written atomically)
    WORK/predictions/<target>/        `predict` output (resumable per case)
    WORK/pseudo/<target>/             `filter` output: images, pseudo-labels, manifest.json, Table 4
    WORK/train_labels/<target>/       the pseudo-labels as trained (PET: unannotated voxels -> ignore label)
    WORK/nnUNet_raw|preprocessed|results/   training.c2f datasets, plans, checkpoints
    WEIGHTS/<out-model>/              the new model (engine format), provenance["selftrain"] names the cycle

A step is skipped when cycle.json records it as finished and its outputs are still there; a rerun with different
settings in the same WORK is refused (the settings define the cycle). Steps that stopped half-way resume: predict
per case, convert and plan per case, training from nnU-Net's checkpoint_latest; filter and the label step are
redone from scratch (they are cheap).

Partially labelled sets (PET pseudo-labels carry liver, kidneys and spleen only): nnU-Net's ignore label
(max class + 1 = 14 for the 13 organs) is declared in the training datasets, and every voxel of a PET
pseudo-label that is not one of its annotated organs becomes 14, i.e. it takes no part in the loss (neither as
background nor as any organ). A no-majority label other than 0 (`--no-majority-label 14`) is the same ignore
label for MRI sets. The CT and synthetic sets hold no ignore voxel, so they supply every class and background.

Training starts from the best model's exported weights (`<best>/coarse.pt`, `<best>/fine.pt`, sha256-checked by
loading the card): they hold every layer of nnU-Net's PlainConvUNet under nnU-Net's keys, so any model folder whose
architecture matches the spec can start a cycle, whether it came from training.c2f or from an earlier cycle.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

from inference.atomic import write_json
from inference.config import CARD_NAME, TTA, ModelCardError
from inference.model_folder import ModelFolder, load_model_folder
from inference.io import write_labels
from training.c2f.config import STAGES, C2FSpec
from training.c2f.convert import Source, dataset_name

from . import labels as L
from .filtering import FilterConfig, run_filter
from .predict import PredictConfig, run_predict
from .stats import file_sha256, load_stats

STATE_FORMAT = "flare-uda selftrain cycle v1"
STATE_FILE = "cycle.json"
DEFAULT_TRAINER = "nnUNetTrainerC2F"
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


@dataclass
class StepReport:
    name: str
    ran: bool  # False: finished by an earlier run, skipped
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class CycleResult:
    cycle: int
    model: Path
    steps: list[StepReport]

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.steps if s.ran]


def _resolve_model(weights: Path, spec: str) -> Path:
    path = Path(spec)
    return path if (path.is_absolute() or len(path.parts) > 1) else Path(weights) / spec


def _load(folder: Path, role: str) -> ModelFolder:
    try:
        return load_model_folder(folder, verify=True)
    except ModelCardError as exc:
        raise CycleError(f"--{role} {folder}: {exc}") from None


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


def check_compatible(model: ModelFolder, spec: C2FSpec) -> None:
    """The model's networks must be the spec's (its weights start the training) with the spec's classes."""
    for stage in STAGES:
        card = model.card.stage(stage)
        if "torch" not in card.files:
            raise CycleError(f"{model.path}: the {stage} stage has no torch weights (files {card.files}); training "
                             "starts from them")
        want = spec.stage(stage).network.architecture()
        if card.architecture != want:
            raise CycleError(f"{model.path}: the {stage} network of the model differs from the --spec network "
                             f"({card.architecture} vs {want}); pass the spec the model was trained with")
        if tuple(card.label_ids) != spec.class_ids:
            raise CycleError(f"{model.path}: {stage} labels {card.label_ids} differ from the spec's classes "
                             f"{spec.class_ids}")


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


class Cycle:
    """One self-training cycle; `run()` executes (or skips) the steps in order."""

    def __init__(self, cfg: CycleConfig, say: Callable[[str], None] = print):
        from training.c2f.cli import folders_of
        from training.c2f.config import default_spec

        self.cfg = cfg
        self.say = say
        self.work = Path(cfg.work).resolve()
        self.weights = Path(cfg.weights).resolve()
        self.folders = folders_of(self.work)
        self.models = {"best": _resolve_model(self.weights, cfg.best), "second": _resolve_model(self.weights, cfg.second)}
        self.extras = [_resolve_model(self.weights, m) for m in cfg.extras]
        self.best = _load(self.models["best"], "best")
        _load(self.models["second"], "second")
        for p in self.extras:
            _load(p, "extra")
        if not Path(cfg.stats).is_file():
            raise CycleError(f"--stats {cfg.stats}: no such file (python -m training.selftrain stats)")
        self.stats = load_stats(cfg.stats)
        for t in cfg.targets:
            self.stats.for_set(t.target_set, cfg.stats)  # raises naming the file when the set has no statistics
            if not Path(t.images).is_dir():
                raise CycleError(f"--targets {t.name}: no folder {t.images}")
        for src in (cfg.ct, *cfg.synthetic):
            for folder in (src.images, src.labels):
                if not Path(folder).is_dir():
                    raise CycleError(f"source {src.name}: no folder {folder}")
        self.spec = training_spec(cfg.spec or default_spec(), cfg.targets, cfg.no_majority_label)
        check_compatible(self.best, self.spec)
        previous = self.best.card.provenance.get("selftrain", {})
        self.number = int(previous.get("cycle", 0)) + 1 if isinstance(previous, dict) else 1
        self.fingerprint = self._fingerprint()
        self.cycle_id = hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()[:16]
        self.out_model = self.weights / cfg.out_model
        self.state = self._load_state()
        self._check_out_model()

    def _check_out_model(self) -> None:
        """Refuse (before any work) a --out-model folder holding a model that this cycle did not write."""
        card_file = self.out_model / CARD_NAME
        if not card_file.is_file():
            return
        try:
            prov = json.loads(card_file.read_text()).get("provenance", {}).get("selftrain", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            prov = {}
        if not isinstance(prov, dict) or prov.get("cycle_id") != self.cycle_id:
            raise CycleError(f"{self.out_model}: a model exists there that this cycle did not write; "
                             "choose another --out-model")

    # ---- configuration and state ------------------------------------------------------------------------------

    def _fingerprint(self) -> dict[str, Any]:
        cfg = self.cfg

        def model(path: Path) -> dict[str, str]:
            return {"name": path.name, "path": str(path.resolve()), "card_sha256": file_sha256(path / CARD_NAME)}

        def src(s: Source) -> dict[str, str]:
            return {"images": str(Path(s.images).resolve()), "labels": str(Path(s.labels).resolve())}

        return {
            "cycle": self.number,
            "ct": src(cfg.ct), "synthetic": {s.name: src(s) for s in cfg.synthetic},
            "targets": {t.name: {"images": str(Path(t.images).resolve()), "set": t.target_set,
                                 "modality": t.modality} for t in cfg.targets},
            "models": {"best": model(self.models["best"]), "second": model(self.models["second"]),
                       "extra": [model(p) for p in self.extras]},
            "stats": {"path": str(Path(cfg.stats).resolve()), "sha256": file_sha256(cfg.stats)},
            "out_model": str(self.weights / cfg.out_model),
            "spec": self.spec.to_dict(),
            "trainer": cfg.trainer, "epochs": cfg.epochs, "iterations": cfg.iterations,
            "val_iterations": cfg.val_iterations, "lr": cfg.lr,
            "filter": {"top_k": cfg.top_k, "dice_threshold": cfg.dice_threshold, "n_sigma": cfg.n_sigma,
                       "no_majority_label": cfg.no_majority_label, "native_spacing": cfg.native_spacing},
            "dataset_id": cfg.dataset_id, "onnx": cfg.onnx,
        }

    def _load_state(self) -> dict[str, Any]:
        path = self.work / STATE_FILE
        if not path.is_file():
            return {"format": STATE_FORMAT, "cycle": self.number, "cycle_id": self.cycle_id,
                    "config": json.loads(json.dumps(self.fingerprint)), "steps": {}}
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CycleError(f"{path}: unreadable cycle state ({exc}); remove it to start the cycle again") from None
        if state.get("format") != STATE_FORMAT:
            raise CycleError(f"{path}: not a self-training cycle state ({STATE_FORMAT!r} expected)")
        old = state.get("config", {})
        new = json.loads(json.dumps(self.fingerprint))
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise CycleError(f"{path}: this work folder holds a cycle with other settings (differing: "
                             f"{', '.join(diff)}); use a new --work folder for a new cycle")
        return state

    def _save_state(self) -> None:
        write_json(self.work / STATE_FILE, self.state, indent=1, mkdir=True)

    def _done(self, name: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        rec = self.state["steps"].get(name)
        return rec if rec is not None and check(rec) else None

    def _finish(self, name: str, seconds: float, info: dict[str, Any]) -> None:
        self.state["steps"][name] = {"seconds": round(seconds, 2), "finished_at":
                                     datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
        self._save_state()

    # ---- paths ------------------------------------------------------------------------------------------------

    def pred_dir(self, t: TargetSet) -> Path:
        return self.work / "predictions" / t.name

    def pseudo_dir(self, t: TargetSet) -> Path:
        return self.work / "pseudo" / t.name

    def labels_dir(self, t: TargetSet) -> Path:
        return self.work / "train_labels" / t.name

    def raw_dataset(self, stage: str) -> Path:
        return self.folders.raw / dataset_name(self.cfg.dataset_id + (0 if stage == "coarse" else 1), stage)

    def train_folder(self, stage: str) -> Path:
        from training.c2f.train import output_folder

        return output_folder(self.folders, self.raw_dataset(stage).name, self.cfg.trainer, "all")

    def start_weights(self, stage: str) -> Path:
        return self.best.path / self.best.card.stage(stage).files["torch"]

    # ---- steps ------------------------------------------------------------------------------------------------

    def step_names(self) -> list[str]:
        ts = self.cfg.targets
        return ([f"predict:{t.name}" for t in ts] + [f"filter:{t.name}" for t in ts] + [f"labels:{t.name}" for t in ts]
                + ["convert", "plan", "train:coarse", "train:fine", "export"])

    def run(self) -> CycleResult:
        self.work.mkdir(parents=True, exist_ok=True)
        names = self.step_names()
        self.say(f"[cycle {self.number}] {self.work}: {len(names)} steps; best {self.models['best'].name}, "
                 f"second {self.models['second'].name}" + (f", extra {[p.name for p in self.extras]}" if self.extras
                                                           else "") + f" -> {self.out_model}")
        reports = []
        for i, name in enumerate(names, start=1):
            kind, _, arg = name.partition(":")
            check, run = getattr(self, f"_check_{kind}"), getattr(self, f"_run_{kind}")
            rec = self._done(name, lambda r: check(arg, r))
            if rec is not None:
                self.say(f"[cycle {self.number}] {i}/{len(names)} {name}: finished earlier, skipped")
                reports.append(StepReport(name, False, 0.0, rec))
                continue
            self.say(f"[cycle {self.number}] {i}/{len(names)} {name} ...")
            t0 = time.perf_counter()
            info = run(arg)
            seconds = time.perf_counter() - t0
            self._finish(name, seconds, info)
            self.say(f"[cycle {self.number}] {i}/{len(names)} {name}: done in {seconds:.1f} s" + _summary(info))
            reports.append(StepReport(name, True, seconds, info))
        self.say(f"[cycle {self.number}] finished: {self.out_model}")
        return CycleResult(cycle=self.number, model=self.out_model, steps=reports)

    def _target(self, name: str) -> TargetSet:
        return next(t for t in self.cfg.targets if t.name == name)

    # predict
    def _check_predict(self, arg: str, rec: dict[str, Any]) -> bool:
        return (self.pred_dir(self._target(arg)) / "records").is_dir()

    def _run_predict(self, arg: str) -> dict[str, Any]:
        t = self._target(arg)
        cfg = self.cfg
        spacing = None if cfg.native_spacing else self.stats.median_spacing_xyz_mm
        pc = PredictConfig(images=Path(t.images), weights_dir=self.weights,
                           models=tuple(str(p) for p in [self.models["best"], self.models["second"], *self.extras]),
                           out=self.pred_dir(t), target_spacing_xyz_mm=spacing, modality=t.modality,
                           device=cfg.device, threads=cfg.threads, progress=cfg.progress)
        summary = run_predict(pc)
        if summary.failed:
            lines = "; ".join(f"{c}: {r}" for c, r in summary.failed.items())
            raise PredictFailed(f"target {t.name}: {len(summary.failed)} scan(s) failed ({lines}); rerun to retry")
        return {"cases": len(summary.shard_cases), "predicted": len(summary.predicted),
                "already_finished": len(summary.skipped)}

    # filter
    def _check_filter(self, arg: str, rec: dict[str, Any]) -> bool:
        manifest = self.pseudo_dir(self._target(arg)) / "manifest.json"
        return manifest.is_file() and file_sha256(manifest) == rec.get("manifest_sha256")

    def _run_filter(self, arg: str) -> dict[str, Any]:
        t = self._target(arg)
        cfg = self.cfg
        out = self.pseudo_dir(t)
        if out.exists():  # an unfinished earlier attempt: the folder belongs to this cycle, redo it
            shutil.rmtree(out)
        fc = FilterConfig(predictions=self.pred_dir(t), stats=Path(cfg.stats), target_set=t.target_set, out=out,
                          scan_modality=t.modality, top_k=cfg.top_k, dice_threshold=cfg.dice_threshold,
                          n_sigma=cfg.n_sigma, no_majority_label=cfg.no_majority_label, progress=cfg.progress)
        row, _, manifest = run_filter(fc)
        from .filtering import format_table4

        self.say(format_table4([row]))
        return {"cases": manifest["numTraining"], "manifest_sha256": file_sha256(out / "manifest.json"),
                "table4": asdict(row)}

    # training labels
    def _manifest(self, t: TargetSet) -> dict[str, Any]:
        return json.loads((self.pseudo_dir(t) / "manifest.json").read_text())

    def _check_labels(self, arg: str, rec: dict[str, Any]) -> bool:
        t = self._target(arg)
        return all((self.labels_dir(t) / f"{c}.nii.gz").is_file() for c in rec.get("cases", []))

    def _run_labels(self, arg: str) -> dict[str, Any]:
        t = self._target(arg)
        manifest = self._manifest(t)
        folder = self.labels_dir(t)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        ignore = self.spec.ignore_label
        cases, ignored = [], 0.0
        for entry in manifest["cases"]:
            src = self.pseudo_dir(t) / entry["label"]
            ref = sitk.ReadImage(str(src))
            lab = train_labels(sitk.GetArrayFromImage(ref), t.target_set, manifest["no_majority_label"], ignore)
            write_labels(lab, ref, folder / f"{entry['case']}.nii.gz")
            cases.append(entry["case"])
            if ignore is not None:
                ignored += float(np.count_nonzero(lab == ignore)) / lab.size
        return {"cases": cases, "ignore_label": ignore,
                "mean_ignored_fraction": round(ignored / len(cases), 6) if cases else 0.0}

    # convert
    def sources(self) -> list[Source]:
        out = [self.cfg.ct, *self.cfg.synthetic]
        for t in self.cfg.targets:
            if self.state["steps"].get(f"labels:{t.name}", {}).get("cases"):
                out.append(Source(name=t.name, images=self.pseudo_dir(t) / "images", labels=self.labels_dir(t)))
        return out

    def _check_convert(self, arg: str, rec: dict[str, Any]) -> bool:
        return all((self.raw_dataset(s) / "dataset.json").is_file() for s in STAGES)

    def _run_convert(self, arg: str) -> dict[str, Any]:
        from training.c2f.convert import convert

        sources = self.sources()
        pseudo = [s.name for s in sources if s.name in {t.name for t in self.cfg.targets}]
        if not pseudo:
            raise CycleError("no pseudo-labelled case survived the filter in any target set (see the Table 4 rows "
                             "above): lower --dice-threshold / raise --n-sigma, or improve the models")
        out = convert(sources, self.folders.raw, self.cfg.dataset_id, self.spec, workers=self.cfg.workers)
        info: dict[str, Any] = {}
        for stage, folder in out.items():
            ds = json.loads((folder / "dataset.json").read_text())
            per_source: dict[str, int] = {}
            for src in ds["c2f"]["case_source"].values():
                per_source[src] = per_source.get(src, 0) + 1
            info[stage] = {"cases": ds["numTraining"], "per_source": per_source}
        return info

    # plan
    def _check_plan(self, arg: str, rec: dict[str, Any]) -> bool:
        from training.c2f.planner import PLANS_NAME

        return all((self.folders.preprocessed / self.raw_dataset(s).name / f"{PLANS_NAME}.json").is_file()
                   for s in STAGES)

    def _run_plan(self, arg: str) -> dict[str, Any]:
        from training.c2f.nnunet_env import bind_folders
        from training.c2f.planner import plan_and_preprocess

        bind_folders(self.folders, self.cfg.workers)
        for stage in STAGES:
            plan_and_preprocess(self.raw_dataset(stage), self.folders.preprocessed, workers=max(1, self.cfg.workers))
        return {}

    # train
    def _check_train(self, arg: str, rec: dict[str, Any]) -> bool:
        ckpt = self.train_folder(arg) / "checkpoint_final.pth"
        return ckpt.is_file() and file_sha256(ckpt) == rec.get("checkpoint_sha256")

    def _run_train(self, stage: str) -> dict[str, Any]:
        import torch

        from training.c2f.train import TrainArgs, train

        fold = self.train_folder(stage)
        resume = (fold / "checkpoint_latest.pth").is_file() or (fold / "checkpoint_final.pth").is_file()
        start = self.start_weights(stage)
        cfg = self.cfg
        args = TrainArgs(folders=self.folders, dataset=self.raw_dataset(stage).name, trainer=cfg.trainer, fold="all",
                         device=cfg.device, num_gpus=cfg.num_gpus, epochs=cfg.epochs,
                         iterations_per_epoch=cfg.iterations, val_iterations_per_epoch=cfg.val_iterations,
                         initial_lr=cfg.lr, time_budget_s=cfg.time_budget_s, continue_training=resume, pretrained=None if resume else str(start),
                         workers=cfg.da_workers, threads=cfg.threads)
        self.say(f"  {stage}: " + ("resuming from the latest checkpoint" if resume else f"starting from {start}"))
        threads = torch.get_num_threads()
        try:
            folder = train(args)
        finally:
            torch.set_num_threads(threads)
        ckpt = Path(folder) / "checkpoint_final.pth"
        if not ckpt.is_file():
            raise CycleError(f"{ckpt}: training ended without a final checkpoint")
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        return {"checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt),
                "epochs_completed": int(saved["current_epoch"]), "start_weights": str(start),
                "start_weights_sha256": self.best.card.sha256[start.name], "resumed": resume}

    # export
    def _check_export(self, arg: str, rec: dict[str, Any]) -> bool:
        card = self.out_model / CARD_NAME
        return card.is_file() and file_sha256(card) == rec.get("card_sha256")

    def provenance(self) -> dict[str, Any]:
        steps = self.state["steps"]
        pseudo = {}
        for t in self.cfg.targets:
            filt = steps.get(f"filter:{t.name}", {})
            pseudo[t.name] = {"set": t.target_set, "images": str(Path(t.images).resolve()),
                              "manifest": str(self.pseudo_dir(t) / "manifest.json"),
                              "manifest_sha256": filt.get("manifest_sha256"), "cases": filt.get("cases"),
                              "table4": filt.get("table4"),
                              "trained_labels": ("annotated organs only; every other voxel = ignore label "
                                                 f"{self.spec.ignore_label}") if t.target_set == "pet" else
                              ("13 organs + background" + (f"; no-majority voxels = ignore label "
                                                           f"{self.spec.ignore_label}"
                                                           if self.cfg.no_majority_label else ""))}
        fp = self.fingerprint
        return {"selftrain": {
            "cycle": self.number, "cycle_id": self.cycle_id, "work": str(self.work),
            "models": fp["models"],
            "start_weights": {s: {"file": str(self.start_weights(s)),
                                  "sha256": self.best.card.sha256[self.start_weights(s).name]} for s in STAGES},
            "sources": {"ct": fp["ct"], "synthetic": fp["synthetic"], "pseudo_labelled": pseudo},
            "training_cases": {s: steps.get("convert", {}).get(s) for s in STAGES},
            "ignore_label": self.spec.ignore_label,
            "stats": fp["stats"], "filter": fp["filter"],
            "trainer": self.cfg.trainer, "lr": self.cfg.lr,
            "epochs": self.cfg.epochs, "iterations": self.cfg.iterations,
        }}

    def _run_export(self, arg: str) -> dict[str, Any]:
        from training.c2f.export import TrainedStage, export_c2f

        card_file = self.out_model / CARD_NAME
        self._check_out_model()
        stages = {}
        for stage in STAGES:
            card = self.best.card.stage(stage)
            stages[stage] = TrainedStage(folder=self.train_folder(stage).parent, fold="all",
                                         tta=TTA(axes=tuple(card.tta.axes), mode=card.tta.mode),
                                         step_size=card.step_size)
        names = " + ".join(s.name for s in self.sources())
        export_c2f(self.out_model, stages["coarse"], stages["fine"], name=self.cfg.out_model,
                   description=f"self-training cycle {self.number}: {self.models['best'].name} fine-tuned on "
                               f"{names} ({self.cfg.trainer})",
                   modalities=tuple(self.best.card.modalities), onnx=self.cfg.onnx,
                   extra_provenance=self.provenance(),   # the starting model's ROI cap / regrowth and clean-up
                   roi_from=self.best.card.roi, postprocess=self.best.card.postprocess)
        return {"model": str(self.out_model), "card_sha256": file_sha256(card_file)}


def _summary(info: dict[str, Any]) -> str:
    """Short one-line view of a step's record: numbers, flags, short strings; per-stage case counts."""
    parts = []
    for k, v in info.items():
        if isinstance(v, bool) or isinstance(v, (int, float)) or (isinstance(v, str) and len(v) <= 24):
            parts.append(f"{k}={v}")
        elif isinstance(v, dict) and "cases" in v and "per_source" in v:
            parts.append(f"{k}: {v['cases']} cases {v['per_source']}")
    return (": " + ", ".join(parts)) if parts else ""


def run_cycle(cfg: CycleConfig, say: Callable[[str], None] = print) -> CycleResult:
    """Run (or finish, or confirm) one self-training cycle."""
    return Cycle(cfg, say).run()

