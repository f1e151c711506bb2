"""PET rows: FDG-PET-like renders of the 30 BTCV label maps as the labelled source, and the plausibility check on
the two real FDG PET scans (there are no PET labels here).

    WORK/render/body/<case>.nii.gz                 body mask of each BTCV CT (all the renderer takes from a scan)
    WORK/render/pet/images/<case>_pet<k>_0000.nii.gz, labels/<case>_pet<k>.nii.gz
                                                   `variants` renders per case (training.render.pet: uptake per
                                                   organ drawn per render, hot non-organ structures, the body
                                                   extended 100-250 mm above and below the labels, PSF, noise)
    WORK/scores/r<row>/pet_check.csv               per scan and organ: volume (ml), plausible, placed

The check is the one the PET model shipped so far was chosen by (in the retired first benchmark: organ volumes within
adult ranges, liver right of spleen, kidneys below liver / spleen); `check_model` runs it for any model folder, so
the shipped model and a new row are measured by the same engine in the same run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from inference.atomic import write_json
from training.pet_check import PET_CASES

from . import protocol

PAD_MM = (100.0, 250.0)


def pet_cases(work: Path, data: Path = protocol.REAL_DATA, variants: int = 2, seed: int = 0,
              workers: int = 1) -> list[protocol.Case]:
    """The rendered PET source (rendered where missing; renders of another seed, variant count or body extension
    are removed first: training.resume)."""
    from dataclasses import asdict

    from training.render import PetRenderConfig, render_pet_folder, write_body_mask
    from training.resume import claim

    body = work / "render" / "body"
    body.mkdir(parents=True, exist_ok=True)
    names = []
    for case in protocol.source_cases("btcv", data)[0]:
        if not (body / case.label.name).is_file():
            write_body_mask(case.image, case.label, body / case.label.name)
        names.append(case.name)
    out = work / "render" / "pet"
    claim(out, {"seed": seed, "variants": variants, "config": asdict(PetRenderConfig(pad_mm=PAD_MM))})
    render_pet_folder(case.label.parent, body, names, out, seed, variants, PetRenderConfig(pad_mm=PAD_MM),
                      workers=workers)
    return [protocol.Case(f"{n}_pet{k}", out / "images" / f"{n}_pet{k}_0000.nii.gz",
                          out / "labels" / f"{n}_pet{k}.nii.gz") for n in names for k in range(variants)]


def check_model(model: Path, out: Path, data: Path = protocol.REAL_DATA, threads: int | None = None) -> Path:
    """Segment the real FDG PET scans with `model` (a weights/<name> folder; the engine in a fresh process) and
    check every organ's volume and placement; returns out/pet_check.csv (written with out/pet_check.json)."""
    from training.pet_check import check_rows, write_check
    from training.runner import run_logged

    images = out / "pet_images"
    images.mkdir(parents=True, exist_ok=True)
    for case in PET_CASES:
        src = data / "pet_fdg" / "images" / f"{case}_0000.nii.gz"
        if not src.is_file():
            raise FileNotFoundError(f"{src}: FDG PET scan missing")
        if not (images / src.name).is_symlink():
            (images / src.name).symlink_to(src.resolve())
    pred = out / "pet_pred"
    argv = [sys.executable, "-m", "inference", str(images), str(pred), "--weights", str(model.parent), "--model", model.name,
            "--device", "cpu", "--backend", "onnx", "--log-dir", str(out / "pet_qc")]
    if threads:
        argv += ["--threads", str(threads)]
    t0 = time.monotonic()
    run_logged(argv, out / "pet_predict.log")
    seconds = time.monotonic() - t0
    rows, _, _ = check_rows(pred, PET_CASES)
    csv_path = write_check(out / "pet_check.csv", rows)
    plausible, placed_all = sum(r[6] for r in rows), sum(r[7] for r in rows)
    write_json(out / "pet_check.json", {"model": model.name, "organs": len(rows), "plausible": plausible,
                                        "placed": placed_all, "predict_seconds_2_scans": round(seconds, 1)})
    return csv_path


def check_summary(csv_path: Path) -> dict:
    """{'organs', 'plausible', 'placed', 'both'}: how many (scan, organ) pairs pass each check."""
    from training.pet_check import read_pet_check_placed

    checks = read_pet_check_placed(csv_path).values()
    return {"organs": len(checks), "plausible": sum(good for _, good, _ in checks),
            "placed": sum(placed is True for _, _, placed in checks),
            "both": sum(good and placed is True for _, good, placed in checks)}
