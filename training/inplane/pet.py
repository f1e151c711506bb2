"""PET rows: FDG-PET-like renders of the 30 BTCV label maps as the labelled source, and the plausibility check on
the two real FDG PET scans (there are no PET labels here).

    WORK/rows/<row>/render/pet.npz                 `render_variants` renders per BTCV case from the pack
                                                   (packed.prepare_render; training.render.pet: uptake per organ
                                                   drawn per render, hot non-organ structures, the body extended
                                                   100-250 mm above and below the labels, PSF, noise)
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
