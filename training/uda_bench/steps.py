"""The benchmark as a graph of steps: each step is one of the project's own commands (or a small function), with
the steps it waits for. Everything lives under one work folder:

    WORK/data/{target_images, target_labels, test_images, test_labels}/   links to the real CHAOS files
    WORK/data/pet_images/                links to the real FDG PET scans (row P only)
    WORK/ct/{body, images, labels}/      source: body masks, rendered CT + real TotalSegmentator CT crops, labels
    WORK/stats.json                      CT statistics for the self-training filter
    WORK/pet_render/{images, labels}/    row PR: FDG-PET-like renders of the source label maps
    WORK/synth_render/{images, labels}/  row R: random-contrast renders of the source label maps
    WORK/cyclegan/{attn,plain,pet}/      CycleGAN runs;  WORK/syn/{attn,plain,pet}/{images,labels}  synthetic
                                         MRI (attention, plain) and FDG PET (attention)
    WORK/rows/<row>/                     nnU-Net folders of each row's C2F training;  WORK/rows/3/ the cycle's work
    WORK/models/r<row>/                  exported models (the engine's weights format)
    WORK/state/<step>.json, WORK/logs/<step>.log   resume markers and logs (runner.py)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from training.c2f.chain import C2FChain, StageTraining, chain_steps
from training.pet_check import PET_CASES
from training.runner import Step

from .protocol import ROWS, SOURCE_CASES, TARGET_CASES, TEST_CASES, TS_CT_CASES, Profile

PY = sys.executable


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst)


def prepare_data(data: Path, work: Path, pet: bool = False) -> dict:
    """Link the protocol's real files into WORK/data (never copied); fail naming the first missing file.
    `pet`: also the FDG PET scans of row P."""
    chaos = data / "mr_chaos_t2"
    ts = data / "totalseg_examples"
    plan = []
    if pet:
        plan += [(data / "pet_fdg/images" / f"{case}_0000.nii.gz", work / "data/pet_images" / f"{case}_0000.nii.gz")
                 for case in PET_CASES]
    for case in TARGET_CASES:
        plan += [(chaos / "images" / f"{case}_0000.nii.gz", work / "data/target_images" / f"{case}_0000.nii.gz"),
                 (chaos / "labels" / f"{case}.nii.gz", work / "data/target_labels" / f"{case}.nii.gz")]
    for case in TEST_CASES:
        plan += [(chaos / "images" / f"{case}_0000.nii.gz", work / "data/test_images" / f"{case}_0000.nii.gz"),
                 (chaos / "labels" / f"{case}.nii.gz", work / "data/test_labels" / f"{case}.nii.gz")]
    for case in TS_CT_CASES:
        plan += [(ts / "images" / f"{case}_0000.nii.gz", work / "ct/images" / f"{case}_0000.nii.gz"),
                 (ts / "labels" / f"{case}.nii.gz", work / "ct/labels" / f"{case}.nii.gz")]
    for case in SOURCE_CASES:
        plan.append((chaos / "labels" / f"{case}.nii.gz", work / "data/source_labels" / f"{case}.nii.gz"))
    missing = [str(s) for s, _ in plan if not s.is_file()]
    if missing:
        raise FileNotFoundError(f"benchmark data missing ({len(missing)} files), first: {missing[0]}")
    for src, dst in plan:
        _link(src, dst)
    return {"linked": len(plan)}


def body_masks(data: Path, work: Path) -> dict:
    """Body masks of the source scans (the only thing the renderer takes from them). Resumable per case."""
    from training.render import write_body_mask

    chaos = data / "mr_chaos_t2"
    out = work / "ct/body"
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for case in SOURCE_CASES:
        target = out / f"{case}.nii.gz"
        if not target.exists():
            write_body_mask(chaos / "images" / f"{case}_0000.nii.gz", chaos / "labels" / f"{case}.nii.gz", target)
            n += 1
    return {"written": n}


def render(work: Path, seed: int) -> dict:
    from training.render import render_folder

    records = render_folder(work / "data/source_labels", work / "ct/body", list(SOURCE_CASES), work / "ct", seed)
    return {"rendered": records}


def render_pet(work: Path, seed: int, variants: int, workers: int = 1) -> dict:
    """Row PR's source: `variants` FDG-PET-like renders of each source case, the body extended 100-250 mm above
    and below the labelled slices (whole-body scans reach far beyond the labels)."""
    from training.render import PetRenderConfig, render_pet_folder

    records = render_pet_folder(work / "data/source_labels", work / "ct/body", list(SOURCE_CASES), work / "pet_render",
                                seed, variants, PetRenderConfig(pad_mm=(100.0, 250.0)), workers=workers)
    return {"rendered": records}


def render_synth(work: Path, seed: int, variants: int, workers: int = 1) -> dict:
    """Row R's source: `variants` random-contrast renders of each source case (no body extension: the CHAOS
    scans cover the same abdominal range as the labels)."""
    from training.render import render_variants_folder

    records = render_variants_folder(work / "data/source_labels", work / "ct/body", list(SOURCE_CASES),
                                     work / "synth_render", seed, variants, "synth", workers=workers)
    return {"rendered": records}


def write_inputs(work: Path, profile: Profile) -> None:
    """The spec and CycleGAN option files the commands read (rewritten each run from the profile)."""
    (work / "inputs").mkdir(parents=True, exist_ok=True)
    (work / "inputs/spec.json").write_text(json.dumps(profile.spec, indent=2) + "\n")
    for kind, modality, plain in (("attn", "mri", False), ("plain", "mri", True), ("pet", "pet", False)):
        opts = dict(profile.cyclegan, target_modality=modality, attention=not plain)
        (work / f"inputs/cyclegan_{kind}.json").write_text(json.dumps(opts, indent=2) + "\n")
    (work / "inputs/profile.json").write_text(json.dumps(profile.to_dict(), indent=2) + "\n")


def _c2f_row(row: str, work: Path, sources: list[str], deps: tuple[str, ...], profile: Profile,
             device: str, modalities: tuple[str, ...] = ("MRI",)) -> list[Step]:
    stage = {name: StageTraining(run.epochs, run.iterations, run.val_iterations, run.time_budget_s)
             for name, run in (("coarse", profile.coarse), ("fine", profile.fine))}
    chain = C2FChain(work=work / "rows" / row, sources=tuple(sources), out=work / "models" / f"r{row}",
                     name=f"r{row}", description=f"UDA benchmark row {row} ({profile.name} profile)",
                     spec=work / "inputs/spec.json", trainer=profile.trainer, lr=profile.lr, device=device,
                     threads=1 if device == "cpu" else None, workers=profile.workers, da_workers=profile.da_workers,
                     coarse=stage["coarse"], fine=stage["fine"], modalities=modalities, onnx=False)
    return chain_steps(f"r{row}.", chain, deps)


def _cyclegan(kind: str, work: Path, device: str, threads: int = 1) -> list[Step]:
    """CycleGAN `kind` (attn, plain: towards the CHAOS target MRI; pet: towards the FDG PET scans) + translation."""
    run = work / "cyclegan" / kind
    syn = work / "syn" / kind
    target = work / "data" / ("pet_images" if kind == "pet" else "target_images")
    train = [PY, "-m", "training.cyclegan", "train", "--ct-images", str(work / "ct/images"),
             "--ct-labels", str(work / "ct/labels"), "--target-images", str(target),
             "--out", str(run), "--device", device, "--options", str(work / f"inputs/cyclegan_{kind}.json"), "--quiet"]
    if device == "cpu":
        train += ["--threads", str(threads)]
    return [
        Step(f"cg_{kind}.train", ("render",), train, gpu=True),
        Step(f"cg_{kind}.translate", (f"cg_{kind}.train",),
             [PY, "-m", "training.cyclegan", "translate", "--checkpoint", str(run / "checkpoints/latest.pt"),
              "--ct-images", str(work / "ct/images"), "--ct-labels", str(work / "ct/labels"), "--out", str(syn),
              "--device", device, "--quiet"], gpu=True),
    ]


def build_steps(work: Path, data: Path, profile: Profile, rows: tuple[str, ...], device: str) -> list[Step]:
    """Every step needed for `rows` (dependencies included), in a valid order."""
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise ValueError(f"unknown rows {bad}: choose from {list(ROWS)}")
    work = Path(work)
    ct = f"ct={work / 'ct/images'},{work / 'ct/labels'}"
    want = set(rows)
    if "3" in want:
        want |= {"2", "2b"}
    steps = [
        Step("data", (), func=lambda: prepare_data(data, work, pet=bool(want & {"P", "PR"})),
             settings={"data": str(data), "pet": bool(want & {"P", "PR"})}),
        Step("body", ("data",), func=lambda: body_masks(data, work), settings={"data": str(data)}),
    ]
    if want - {"PR", "R"}:   # every other row trains on the rendered CT (rows PR and R only on their own renders)
        steps.append(Step("render", ("body",), func=lambda: render(work, profile.render_seed),
                          settings={"seed": profile.render_seed}))
    if "1" in want:
        steps += _c2f_row("1", work, [ct], ("render",), profile, device)
    for row, kind in (("2", "attn"), ("2b", "plain")):
        if row in want:
            steps += _cyclegan(kind, work, device, profile.cyclegan_cpu_threads)
            syn = work / "syn" / kind
            steps += _c2f_row(row, work, [ct, f"syn{kind}={syn / 'images'},{syn / 'labels'}"],
                              (f"cg_{kind}.translate",), profile, device)
    if "P" in want:
        steps += _cyclegan("pet", work, device, profile.cyclegan_cpu_threads)
        syn = work / "syn/pet"
        steps += _c2f_row("P", work, [ct, f"synpet={syn / 'images'},{syn / 'labels'}"], ("cg_pet.translate",),
                          profile, device, modalities=("PET",))
    steps += _render_rows(work, profile, want, device)
    if "4" in want:
        steps += _c2f_row("4", work, [ct, f"chaos={work / 'data/target_images'},{work / 'data/target_labels'}"],
                          ("render",), profile, device)
    if "3" in want:
        steps += _selftrain_steps(work, profile, device)
    for row in ROWS:   # score each row as soon as its model exists (row P: the PET plausibility check)
        if row in want:
            dep = "r3.cycle" if row == "3" else f"r{row}.export"
            steps.append(Step(f"r{row}.score", (dep,), [PY, "-m", "training.uda_bench", "score", "--work", str(work),
                                                        "--row", row, "--device", device], gpu=True))
    return steps


def _render_rows(work: Path, profile: Profile, want: set[str], device: str) -> list[Step]:
    """The rows trained on renders of the source label maps only: PR (FDG PET-like), R (random contrast)."""
    steps: list[Step] = []
    for row, name, source, render_fn, variants, modalities in (
            ("PR", "pet_render", "petrender", render_pet, profile.pet_render_variants, ("PET",)),
            ("R", "synth_render", "synth", render_synth, profile.synth_render_variants, ("MRI",))):
        if row in want:
            steps.append(Step(name, ("body",), func=lambda f=render_fn, v=variants: f(work, profile.render_seed, v,
                                                                                     profile.workers),
                              settings={"seed": profile.render_seed, "variants": variants}))
            folder = work / name
            steps += _c2f_row(row, work, [f"{source}={folder / 'images'},{folder / 'labels'}"], (name,), profile,
                              device, modalities=modalities)
    return steps


def _selftrain_steps(work: Path, profile: Profile, device: str) -> list[Step]:
    """Row 3: the BTCV label statistics and one self-training cycle from rows 2 and 2b."""
    steps: list[Step] = []
    steps.append(Step("stats", ("render",), [PY, "-m", "training.selftrain", "stats", "--ct-labels",
                                             str(work / "ct/labels"), "--out", str(work / "stats.json"),
                                             "--no-progress"]))
    syn = work / "syn/attn"
    argv = [PY, "-m", "training.selftrain", "cycle", "--work", str(work / "rows/3"),
            "--ct", f"{work / 'ct/images'},{work / 'ct/labels'}",
            "--synthetic", f"synattn={syn / 'images'},{syn / 'labels'}",
            # the CHAOS targets are scored on liver, kidneys and spleen only: the filter's 4-organ set ('pet'
            # set: organs 1, 2, 3, 13, unannotated voxels -> nnU-Net's ignore label) is the matching one; the
            # scans are MRI (the engine's MRI path, the MRI models' own modality)
            "--targets", f"chaos={work / 'data/target_images'}:pet:mri",
            "--weights", str(work / "models"), "--best", "r2", "--second", "r2b",
            "--stats", str(work / "stats.json"), "--out-model", "r3", "--spec", str(work / "inputs/spec.json"),
            "--trainer", profile.trainer, "--lr", str(profile.selftrain_lr),
            "--epochs", str(profile.selftrain.epochs), "--iterations", str(profile.selftrain.iterations),
            "--val-iterations", str(profile.selftrain.val_iterations), "--no-onnx", "--device", device,
            "--workers", str(profile.workers), "--da-workers", str(profile.da_workers), "--no-progress"]
    if profile.selftrain.time_budget_s is not None:
        argv += ["--time-budget", str(profile.selftrain.time_budget_s)]
    if profile.dice_threshold is not None:
        argv += ["--dice-threshold", str(profile.dice_threshold)]
    if device == "cpu":
        argv += ["--threads", "1"]
    steps.append(Step("r3.cycle", ("stats", "r2.export", "r2b.export"), argv, gpu=True))
    return steps
