"""One command per step: spec, convert, plan, train, export (python -m training.c2f STEP --help).

All nnU-Net folders live under `--work DIR` (DIR/nnUNet_raw, DIR/nnUNet_preprocessed, DIR/nnUNet_results); the
commands set nnU-Net's variables themselves, nothing is read from the user's environment.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from inference.atomic import write_json

from .config import STAGES, C2FSpec, dataset_name, default_spec
from .nnunet_env import FOLDER_VARS, NnunetFolders


def folders_of(work: Path) -> NnunetFolders:
    """DIR/nnUNet_raw, DIR/nnUNet_preprocessed, DIR/nnUNet_results: each folder named like its variable."""
    return NnunetFolders(*(Path(work).resolve() / name for name in FOLDER_VARS))


def load_spec(path: Path | None) -> C2FSpec:
    return default_spec() if path is None else C2FSpec.from_dict(json.loads(Path(path).read_text()))


def cmd_spec(a: argparse.Namespace) -> int:
    print(write_json(Path(a.out), default_spec().to_dict()))
    return 0


def cmd_convert(a: argparse.Namespace) -> int:
    from .convert import Source, convert

    sources = [Source.parse(s) for s in a.source]
    for text in a.optional_source:   # kept only when it holds a labelled case (e.g. a filter that kept none)
        src = Source.parse(text)
        try:
            src.cases()
            sources.append(src)
        except FileNotFoundError as exc:
            print(f"skipped: {exc}")
    if not sources:
        raise SystemExit("convert: no source holds a labelled case")
    out = convert(sources, folders_of(a.work).raw, a.dataset_id, load_spec(a.spec), stages=tuple(a.stages),
                  workers=a.workers)
    for stage, folder in out.items():
        print(f"{stage}: {folder}")
    return 0


def cmd_plan(a: argparse.Namespace) -> int:
    from .nnunet_env import bind_folders
    from .planner import plan_and_preprocess

    folders, workers = folders_of(a.work), max(1, a.workers or 1)
    bind_folders(folders, workers)   # nnU-Net's planner uses nnUNet_n_proc_DA torch threads: >= 1
    for stage in a.stages:
        raw = folders.raw / dataset_name(a.dataset_id, stage)
        print(f"{stage}: {plan_and_preprocess(raw, folders.preprocessed, workers=workers)}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from .train import TrainArgs, resumable, train

    args = TrainArgs(folders=folders_of(a.work), dataset=dataset_name(a.dataset_id, a.stage), trainer=a.trainer,
                     fold=a.fold, device=a.device, num_gpus=a.num_gpus, epochs=a.epochs,
                     iterations_per_epoch=a.iterations, val_iterations_per_epoch=a.val_iterations,
                     initial_lr=a.lr, time_budget_s=a.time_budget, continue_training=a.continue_training,
                     pretrained=a.pretrained, validate=a.validate, workers=a.workers, threads=a.threads)
    if a.resume and not a.continue_training and resumable(args):   # an interrupted run goes on where it stopped
        args = replace(args, continue_training=True, pretrained=None)
    print(f"{a.stage}: " + ("resuming from the latest checkpoint" if args.continue_training else
                            f"starting from {a.pretrained}" if a.pretrained else "starting"), flush=True)
    print(train(args))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from inference.config import TTA
    from inference.model_folder import load_model_folder

    from .export import DEFAULT_ROI_MAX_EXTENT_MM, TrainedStage, export_c2f
    from .planner import CONFIGURATION, PLANS_NAME

    results = folders_of(a.work).results
    like = None if a.settings_from is None else load_model_folder(a.settings_from, verify=False).card
    stages = {}
    for stage, trainer, axes in (("coarse", a.coarse_trainer or a.trainer, a.coarse_tta_axes),
                                 ("fine", a.fine_trainer or a.trainer, a.fine_tta_axes)):
        folder = results / dataset_name(a.dataset_id, stage) / f"{trainer}__{PLANS_NAME}__{CONFIGURATION}"
        tta, step = TTA(axes=tuple(axes), mode=a.tta_mode), a.step_size
        if like is not None:   # a fine-tuned model keeps the inference settings of the model it started from
            tta, step = like.stage(stage).tta, like.stage(stage).step_size
        stages[stage] = TrainedStage(folder=folder, fold=a.fold, checkpoint=a.checkpoint, tta=tta, step_size=step)
    cap = None if a.no_roi_cap else tuple(a.roi_max_extent_mm or DEFAULT_ROI_MAX_EXTENT_MM)
    provenance = None
    if a.provenance is not None:
        try:
            provenance = json.loads(a.provenance.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"export --provenance {a.provenance}: not a readable JSON file ({exc})") from None
        if not isinstance(provenance, dict):
            raise SystemExit(f"export --provenance {a.provenance}: a JSON object is needed")
    out = export_c2f(Path(a.out), stages["coarse"], stages["fine"], name=a.name, description=a.description,
                     modalities=tuple(a.modalities), onnx=not a.no_onnx, roi_max_extent_mm=cap,
                     extra_provenance=provenance, roi_from=None if like is None else like.roi,
                     postprocess=None if like is None else like.postprocess)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.c2f", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)

    s = sub.add_parser("spec", help="write the default C2FSpec (spacings, patches, networks, crop margin) as JSON")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_spec)

    def step(name: str, func, help: str) -> argparse.ArgumentParser:
        """A step's subcommand, with the --work and --dataset-id that every step but `spec` takes."""
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--work", required=True, type=Path, help="folder holding nnUNet_raw/preprocessed/results")
        sp.add_argument("--dataset-id", type=int, default=501,
                        help="coarse dataset id; the fine dataset gets id + 1 (default 501)")
        sp.set_defaults(func=func)
        return sp

    s = step("convert", cmd_convert, "labelled folders -> nnU-Net raw datasets (coarse + fine), engine-prepared")
    s.add_argument("--source", action="append", default=[],
                   help="NAME=IMAGES_DIR[,LABELS_DIR] (repeat: labelled CT, synthetic MRI/PET, pseudo-labels)")
    s.add_argument("--optional-source", action="append", default=[],
                   help="as --source, but skipped (with a line) when it holds no labelled case, e.g. a "
                        "pseudo-labelled set whose filter kept none")
    s.add_argument("--spec", type=Path, help="C2FSpec JSON (default: the built-in spec; see `spec`)")
    s.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    s.add_argument("--workers", type=int, default=1, help="conversion processes")

    s = step("plan", cmd_plan, "write C2FPlans and run nnU-Net's preprocessing")
    s.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    s.add_argument("--workers", type=int, default=1, help="preprocessing processes")

    s = step("train", cmd_train, "train one stage (resumable with --continue; multi-GPU with --num-gpus)")
    s.add_argument("--stage", choices=STAGES, required=True)
    s.add_argument("--trainer", default="nnUNetTrainerC2F")
    s.add_argument("--fold", default="all", help="'all' (default) or 0-4")
    s.add_argument("--device", default="cuda", choices=("cuda", "cpu", "mps"))
    s.add_argument("--num-gpus", type=int, default=1, help="> 1: nnU-Net's DDP, one process per GPU")
    s.add_argument("--epochs", type=int)
    s.add_argument("--iterations", type=int, help="training iterations per epoch")
    s.add_argument("--val-iterations", type=int, help="validation iterations per epoch")
    s.add_argument("--lr", type=float, help="initial learning rate (default: the trainer's)")
    s.add_argument("--time-budget", type=float, help="seconds: fewer epochs (cosine schedule rescaled) when the "
                   "epochs measured so far say the run would take longer")
    s.add_argument("--continue", dest="continue_training", action="store_true",
                   help="resume from the latest checkpoint of this stage")
    s.add_argument("--resume", action="store_true",
                   help="resume when an interrupted run of this same training (same arguments, current plans) left a "
                        "checkpoint, else start (from --pretrained)")
    s.add_argument("--pretrained", help="start from these weights, all layers incl. the segmentation heads "
                                        "(nnU-Net checkpoint or an exported weights/<model>/<stage>.pt; self-training)")
    s.add_argument("--validate", action="store_true", help="nnU-Net's full validation after training")
    s.add_argument("--workers", type=int, default=None, help="data augmentation processes (0: none)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU training)")

    s = step("export", cmd_export, "checkpoints -> weights/<model>/ (card + torch + ONNX + provenance)")
    s.add_argument("--out", required=True, help="model folder to write, e.g. weights/c2f_mri")
    for flag, default in (("--name", None), ("--description", ""), ("--trainer", "nnUNetTrainerC2F"),
                          ("--coarse-trainer", None), ("--fine-trainer", None), ("--fold", "all"),
                          ("--checkpoint", "checkpoint_final.pth")):
        s.add_argument(flag, default=default)
    s.add_argument("--modalities", nargs="+", default=["MRI", "PET"])
    s.add_argument("--coarse-tta-axes", nargs="*", type=int, default=[])
    # not axis 2 (x, the patient's right-left): the nets are trained without left-right mirroring (trainers.py)
    s.add_argument("--fine-tta-axes", nargs="*", type=int, default=[0, 1])
    s.add_argument("--tta-mode", choices=("all", "joint"), default="all")
    s.add_argument("--step-size", type=float, default=0.5)
    s.add_argument("--no-onnx", action="store_true")
    s.add_argument("--provenance", type=Path, help="JSON object added to the card's provenance (e.g. the "
                                                   "self-training cycle's sources and filter)")
    s.add_argument("--settings-from", type=Path, metavar="MODEL",
                   help="take TTA, step size, ROI cap / regrowth and clean-up from this model folder's card (a "
                        "fine-tuned model keeps the inference settings of the model it started from)")
    cap = s.add_mutually_exclusive_group()
    cap.add_argument("--roi-max-extent-mm", nargs=3, type=float, metavar=("Z", "Y", "X"),
                     help="largest plausible extent of the coarse organs' union before the ROI margin, written to "
                          "the card's roi.max_extent_mm (default: 350 350 400)")
    cap.add_argument("--no-roi-cap", action="store_true", help="no roi.max_extent_mm: the ROI is every coarse organ")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
