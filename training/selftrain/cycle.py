"""One self-training cycle in one call, as a step graph on the project's runner (training/runner.py):
predict -> filter -> training labels -> the C2F chain (training/c2f/chain.py: convert -> plan -> train coarse and
fine from the best model's weights -> export a new model folder).

    WORK/state/<step>.json, WORK/logs/   the runner's done markers: what each step was made from (settings, command
                                      line, a digest of each upstream marker) and what it recorded
    WORK/predictions/<target>/        `predict` output (resumable per case)
    WORK/pseudo/<target>/             `filter` output: images, pseudo-labels, manifest.json, Table 4
    WORK/train_labels/<target>/       the pseudo-labels as trained (PET: unannotated voxels -> ignore label)
    WORK/provenance.json              the cycle's record, written into the new model's card
    WORK/nnUNet_raw|preprocessed|results/   training.c2f datasets, plans, checkpoints
    WEIGHTS/<out-model>/              the new model (engine format), provenance["selftrain"] names the cycle

A rerun skips every step whose marker matches and whose outputs are still there; a changed setting re-runs the
step it defines and every step below it (e.g. another --n-sigma: the filter, the labels, the training, the export).
A training that stopped half-way goes on from nnU-Net's latest checkpoint; predict resumes per case.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

from inference.atomic import write_json
from inference.config import CARD_NAME, ModelCardError
from inference.io import write_labels
from inference.model_folder import ModelFolder, load_model_folder
from training.c2f.chain import C2FChain, StageTraining, chain_steps
from training.c2f.config import STAGES, C2FSpec
from training.c2f.convert import Source, dataset_name
from training.runner import Step, run_steps

from .cycle_config import (SELFTRAIN_LR, CycleConfig, CycleError, PredictFailed, TargetSet, parse_labelled,
                           train_labels, training_spec)
from .filtering import FilterConfig, format_table4, run_filter
from .predict import PredictConfig, run_predict
from .stats import file_sha256, load_stats

__all__ = ["SELFTRAIN_LR", "Cycle", "CycleConfig", "CycleError", "CycleResult", "PredictFailed", "TargetSet",
           "check_compatible", "parse_labelled", "run_cycle", "train_labels", "training_spec"]


@dataclass
class CycleResult:
    cycle: int
    model: Path
    ran: list[str]
    skipped: list[str]   # finished by an earlier run


def _resolve_model(weights: Path, spec: str) -> Path:
    path = Path(spec)
    return path if (path.is_absolute() or len(path.parts) > 1) else Path(weights) / spec


def _load(folder: Path, role: str) -> ModelFolder:
    try:
        return load_model_folder(folder, verify=True)
    except ModelCardError as exc:
        raise CycleError(f"--{role} {folder}: {exc}") from None


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


class Cycle:
    """One self-training cycle; `run()` runs (or skips) its steps."""

    def __init__(self, cfg: CycleConfig, say: Callable[[str], None] = print):
        from training.c2f.config import default_spec

        self.cfg = cfg
        self.say = say
        self.work = Path(cfg.work).resolve()
        self.weights = Path(cfg.weights).resolve()
        self.models = {"best": _resolve_model(self.weights, cfg.best),
                       "second": _resolve_model(self.weights, cfg.second)}
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
        self._check_out_model()

    def _check_out_model(self) -> None:
        """Refuse (before any work) a --out-model folder holding a model that this work folder did not write."""
        card_file = self.out_model / CARD_NAME
        if not card_file.is_file():
            return
        try:
            prov = json.loads(card_file.read_text()).get("provenance", {}).get("selftrain", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            prov = {}
        if not isinstance(prov, dict) or prov.get("work") != str(self.work):
            raise CycleError(f"{self.out_model}: a model exists there that this cycle did not write; "
                             "choose another --out-model")

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

    # ---- paths ------------------------------------------------------------------------------------------------

    def pred_dir(self, t: TargetSet) -> Path:
        return self.work / "predictions" / t.name

    def pseudo_dir(self, t: TargetSet) -> Path:
        return self.work / "pseudo" / t.name

    def labels_dir(self, t: TargetSet) -> Path:
        return self.work / "train_labels" / t.name

    def start_weights(self, stage: str) -> Path:
        return self.best.path / self.best.card.stage(stage).files["torch"]

    # ---- the step graph ---------------------------------------------------------------------------------------

    def chain(self) -> C2FChain:
        cfg = self.cfg
        stage = {s: StageTraining(cfg.epochs, cfg.iterations, cfg.val_iterations, cfg.time_budget_s,
                                  pretrained=str(self.start_weights(s))) for s in STAGES}
        targets = tuple(f"{t.name}={self.pseudo_dir(t) / 'images'},{self.labels_dir(t)}" for t in cfg.targets)
        sources = tuple(f"{s.name}={s.images},{s.labels}" for s in (cfg.ct, *cfg.synthetic))
        names = " + ".join([cfg.ct.name, *(s.name for s in cfg.synthetic), *(t.name for t in cfg.targets)])
        return C2FChain(work=self.work, sources=sources, optional_sources=targets, out=self.out_model,
                        name=cfg.out_model, description=f"self-training cycle {self.number}: {self.models['best'].name}"
                                                        f" fine-tuned on {names} ({cfg.trainer})",
                        spec=self.work / "spec.json", dataset_id=cfg.dataset_id, trainer=cfg.trainer, lr=cfg.lr,
                        device=cfg.device, num_gpus=cfg.num_gpus, threads=cfg.threads, workers=cfg.workers,
                        da_workers=cfg.da_workers, coarse=stage["coarse"], fine=stage["fine"],
                        modalities=tuple(self.best.card.modalities), onnx=cfg.onnx,
                        provenance=self.work / "provenance.json", settings_from=self.best.path)

    def steps(self) -> list[Step]:
        cfg, fp = self.cfg, self.fingerprint
        out: list[Step] = []
        for t in cfg.targets:
            out.append(Step(f"predict.{t.name}", (), func=lambda t=t: self._predict(t),
                            settings={"target": fp["targets"][t.name], "models": fp["models"],
                                      "native_spacing": cfg.native_spacing},
                            verify=lambda info, t=t: (self.pred_dir(t) / "records").is_dir()))
            out.append(Step(f"filter.{t.name}", (f"predict.{t.name}",), func=lambda t=t: self._filter(t),
                            settings={"stats": fp["stats"], "filter": fp["filter"]},
                            verify=lambda info, t=t: isinstance(info, dict) and self._manifest_is(t, info)))
        out.append(Step("labels", tuple(f"filter.{t.name}" for t in cfg.targets), func=self._labels,
                        settings={"ignore_label": self.spec.ignore_label},
                        verify=lambda info: isinstance(info, dict) and all(
                            (self.labels_dir(t) / f"{c}.nii.gz").is_file() for t in cfg.targets
                            for c in info.get(t.name, {}).get("cases", []))))
        out.append(Step("spec", (), func=lambda: str(write_json(self.work / "spec.json", self.spec.to_dict())),
                        settings={"spec": fp["spec"]}, verify=lambda info: (self.work / "spec.json").is_file()))
        chain = chain_steps("", self.chain(), deps=("labels", "spec"), export_deps=("provenance",), in_process=True)
        out += chain[:-1]
        out.append(Step("provenance", ("labels", "convert"), func=self._provenance,
                        settings={"cycle_id": self.cycle_id, "fingerprint": fp}))
        return out + chain[-1:]

    def run(self) -> CycleResult:
        self.work.mkdir(parents=True, exist_ok=True)
        steps = self.steps()
        self.say(f"[cycle {self.number}] {self.work}: {len(steps)} steps; best {self.models['best'].name}, "
                 f"second {self.models['second'].name}" + (f", extra {[p.name for p in self.extras]}" if self.extras
                                                           else "") + f" -> {self.out_model}")
        result = run_steps(self.work, steps, jobs=1, progress=self.cfg.progress, desc=f"cycle {self.number}")
        if result.skipped:
            self.say(f"[cycle {self.number}] finished earlier, skipped: {', '.join(result.skipped)}")
        if result.failed:
            name, reason = next(iter(result.failed.items()))
            error = PredictFailed if name.startswith("predict.") else CycleError
            raise error(f"step {name}: {reason}")
        self.say(f"[cycle {self.number}] finished: {self.out_model}")
        return CycleResult(cycle=self.number, model=self.out_model, ran=result.done, skipped=result.skipped)

    def _manifest_is(self, t: TargetSet, info: dict[str, Any]) -> bool:
        """The filter's manifest of `t` is still there, as the filter step recorded it."""
        manifest = self.pseudo_dir(t) / "manifest.json"
        return manifest.is_file() and file_sha256(manifest) == info.get("manifest_sha256")

    def _target(self, name: str) -> TargetSet:
        return next(t for t in self.cfg.targets if t.name == name)

    # ---- the cycle's own steps (the C2F chain's are training.c2f's commands) ---------------------------------

    def _predict(self, t: TargetSet) -> dict[str, Any]:
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

    def _filter(self, t: TargetSet) -> dict[str, Any]:
        cfg = self.cfg
        out = self.pseudo_dir(t)
        if out.exists():  # an earlier attempt or other settings: the folder belongs to this cycle, redo it
            shutil.rmtree(out)
        fc = FilterConfig(predictions=self.pred_dir(t), stats=Path(cfg.stats), target_set=t.target_set, out=out,
                          scan_modality=t.modality, top_k=cfg.top_k, dice_threshold=cfg.dice_threshold,
                          n_sigma=cfg.n_sigma, no_majority_label=cfg.no_majority_label, progress=cfg.progress)
        row, _, manifest = run_filter(fc)
        self.say(format_table4([row]))
        return {"cases": manifest["numTraining"], "manifest_sha256": file_sha256(out / "manifest.json"),
                "table4": asdict(row)}

    def _labels(self) -> dict[str, Any]:
        """Every kept pseudo-label as it is trained (train_labels); fails when no target set kept a scan."""
        ignore = self.spec.ignore_label
        info: dict[str, Any] = {}
        for t in self.cfg.targets:
            manifest = json.loads((self.pseudo_dir(t) / "manifest.json").read_text())
            folder = self.labels_dir(t)
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            cases, ignored = [], 0.0
            for entry in manifest["cases"]:
                ref = sitk.ReadImage(str(self.pseudo_dir(t) / entry["label"]))
                lab = train_labels(sitk.GetArrayFromImage(ref), t.target_set, manifest["no_majority_label"], ignore)
                write_labels(lab, ref, folder / f"{entry['case']}.nii.gz")
                cases.append(entry["case"])
                if ignore is not None:
                    ignored += float(np.count_nonzero(lab == ignore)) / lab.size
            info[t.name] = {"cases": cases, "ignore_label": ignore,
                            "mean_ignored_fraction": round(ignored / len(cases), 6) if cases else 0.0}
        if not any(v["cases"] for v in info.values()):
            raise CycleError("no pseudo-labelled case survived the filter in any target set (see the Table 4 rows "
                             "above): lower --dice-threshold / raise --n-sigma, or improve the models")
        return info

    def _provenance(self) -> str:
        """WORK/provenance.json: the cycle's models, sources, filter counts and training set (the card's
        provenance["selftrain"])."""
        pseudo = {}
        for t in self.cfg.targets:
            manifest = self.pseudo_dir(t) / "manifest.json"
            data = manifest.read_bytes()
            table4 = json.loads((self.pseudo_dir(t) / "table4.json").read_text())
            pseudo[t.name] = {"set": t.target_set, "images": str(Path(t.images).resolve()), "manifest": str(manifest),
                              "manifest_sha256": hashlib.sha256(data).hexdigest(),
                              "cases": json.loads(data)["numTraining"], "table4": table4,
                              "trained_labels": ("annotated organs only; every other voxel = ignore label "
                                                 f"{self.spec.ignore_label}") if t.target_set == "pet" else
                              ("13 organs + background" + (f"; no-majority voxels = ignore label "
                                                           f"{self.spec.ignore_label}"
                                                           if self.cfg.no_majority_label else ""))}
        training_cases = {}
        for i, stage in enumerate(STAGES):
            ds = json.loads((self.work / "nnUNet_raw" / dataset_name(self.cfg.dataset_id + i, stage)
                             / "dataset.json").read_text())
            per_source: dict[str, int] = {}
            for src in ds["c2f"]["case_source"].values():
                per_source[src] = per_source.get(src, 0) + 1
            training_cases[stage] = {"cases": ds["numTraining"], "per_source": per_source}
        fp = self.fingerprint
        record = {"selftrain": {
            "cycle": self.number, "cycle_id": self.cycle_id, "work": str(self.work),
            "models": fp["models"],
            "start_weights": {s: {"file": str(self.start_weights(s)),
                                  "sha256": self.best.card.sha256[self.start_weights(s).name]} for s in STAGES},
            "sources": {"ct": fp["ct"], "synthetic": fp["synthetic"], "pseudo_labelled": pseudo},
            "training_cases": training_cases, "ignore_label": self.spec.ignore_label,
            "stats": fp["stats"], "filter": fp["filter"],
            "trainer": self.cfg.trainer, "lr": self.cfg.lr,
            "epochs": self.cfg.epochs, "iterations": self.cfg.iterations,
        }}
        return str(write_json(self.work / "provenance.json", record))


def run_cycle(cfg: CycleConfig, say: Callable[[str], None] = print) -> CycleResult:
    """Run (or finish, or confirm) one self-training cycle."""
    return Cycle(cfg, say).run()
