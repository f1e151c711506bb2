"""Scores and learning curves of the in-plane rows.

`score` runs the engine on the CHAOS test scans as the submission runs it (`python -m inference`, a fresh process,
images in, label files out) and scores the masks with `python -m eval score` (FLARE DSC / NSD) on liver, kidneys
and spleen; `table` writes the per-organ markdown table; `plot_curves` draws every stage's curve.csv.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from inference.atomic import write_json
from inference.labels import FLARE_ORGANS as ORGAN_NAMES
from training.runner import run_logged

from . import protocol
from .pet import check_model

PY = sys.executable


def _test_folders(root: Path, data: Path) -> tuple[Path, Path]:
    """Folders of symbolic links to the test images and labels (the engine and the scorer read whole folders)."""
    images, labels = root / "test_images", root / "test_labels"
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for case in protocol.test_cases(data):
        for src, dst in ((case.image, images / case.image.name), (case.label, labels / case.label.name)):
            if not src.is_file():
                raise FileNotFoundError(f"{src}: test scan missing")
            if not dst.exists():
                os.symlink(src.resolve(), dst)
    return images, labels


def score(model: Path, out: Path, data: Path = protocol.REAL_DATA, threads: int | None = None,
          backend: str = "onnx") -> Path:
    """Predict the test scans with `model` (a weights/<name> folder) and score them; returns scores.csv in `out`."""
    images, labels = _test_folders(out, data)
    return predict_and_score(model, images, labels, out, protocol.SCORED_ORGANS, threads, backend)


def predict_and_score(model: Path, images: Path, labels: Path, out: Path, organs, threads: int | None = None,
                      backend: str = "onnx") -> Path:
    """The engine on every scan of `images` (out/pred, a fresh process), FLARE DSC / NSD of `organs` against the
    label maps of `labels`; returns out/scores.csv (out/predict.json: the prediction's wall time)."""
    pred = out / "pred"
    argv = [PY, "-m", "inference", str(images), str(pred), "--weights", str(model.parent), "--model", model.name,
            "--device", "cpu", "--backend", backend, "--log-dir", str(out / "pred_qc")]
    if threads:
        argv += ["--threads", str(threads)]
    t0 = time.monotonic()
    run_logged(argv, out / "predict.log")
    seconds = time.monotonic() - t0
    csv_path = out / "scores.csv"
    run_logged([PY, "-m", "eval", "score", str(pred), str(labels), "--csv", str(csv_path), "--organs",
                ",".join(str(o) for o in organs), "--strict-geometry", "--no-plots"], out / "score.log")
    n = len(list(images.glob("*_0000.nii*")))
    write_json(out / "predict.json", {f"predict_seconds_{n}_scans": round(seconds, 1), "backend": backend,
                                      "threads": threads}, indent=None)
    return csv_path


def read_scores(csv_path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """{(case, organ): (DSC, NSD)} of one `eval score` CSV."""
    with open(csv_path) as fh:
        return {(r["case"], int(r["organ"])): (float(r["dsc"]), float(r["nsd"])) for r in csv.DictReader(fh)}


def score_summary(csv_path: Path, cases, organs) -> dict:
    """{organ: (mean DSC, mean NSD), 'mean': (DSC, NSD), 'cases': {case: mean DSC}} of one scores CSV."""
    sc = read_scores(csv_path)
    entry: dict = {}
    for organ in organs:
        vals = [sc[(c, organ)] for c in cases if (c, organ) in sc]
        entry[organ] = (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])))
    entry["mean"] = (float(np.mean([entry[o][0] for o in organs])), float(np.mean([entry[o][1] for o in organs])))
    entry["cases"] = {c: float(np.mean([sc[(c, o)][0] for o in organs if (c, o) in sc])) for c in cases}
    return entry


def markdown_lines(titled: list[tuple[str, dict]], organs) -> list[str]:
    """Header and one line per (row title, score_summary entry): DSC / NSD per organ in %, then the means."""
    head = "| row | " + " | ".join(ORGAN_NAMES[o] for o in organs) + " | mean DSC | mean NSD |"
    lines = [head, "|" + "---|" * (len(organs) + 3)]
    for title, e in titled:
        cells = [f"{100 * e[o][0]:.1f} / {100 * e[o][1]:.1f}" for o in organs]
        lines.append(f"| {title} | " + " | ".join(cells) + f" | **{100 * e['mean'][0]:.1f}** | "
                     f"{100 * e['mean'][1]:.1f} |")
    return lines


def row_summary(csv_path: Path) -> dict:
    """{organ: (mean DSC, mean NSD), 'mean': (DSC, NSD), 'cases': {case: mean DSC}} over the test scans."""
    return score_summary(csv_path, protocol.TEST_CASES, protocol.SCORED_ORGANS)


def table(rows: dict[str, tuple[str, Path]]) -> str:
    """Markdown: one line per row {key: (title, scores.csv)}, cells DSC / NSD in %."""
    lines = markdown_lines([(title, row_summary(path)) for title, path in rows.values()], protocol.SCORED_ORGANS)
    return "\n".join(lines) + ("\n\nCells: DSC / NSD (%), mean over CHAOS T2 " + ", ".join(protocol.TEST_CASES)
                               + " (NSD tolerance as the FLARE scorer).\n")


def _read_curve(path: Path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in (rows[0] if rows else {})}


def _mark_weight_mean(ax, c: dict[str, np.ndarray], summary: Path, dice: list[str]) -> None:
    """A stage trained with weight averaging (recipe swa_from, loop.py): a dashed line where the averaging began and
    a star at the end for its final weights' (the mean's) mean Dice; the curve itself follows the running weights."""
    stage = json.loads(summary.read_text()) if summary.is_file() else {}
    swa = stage.get("swa")
    if not swa or len(c.get("iteration", ())) < 2:
        return
    began = stage["iterations"] - swa["iterations_averaged"]
    ax.axvline(np.interp(began, c["iteration"], c["seconds"] / 60), color="grey", ls="--", lw=1,
               label="weight averaging from")
    scores = [swa["dice"][k.split("_")[1]] for k in dice if k.split("_")[1] in swa["dice"]]
    if scores:
        ax.plot([c["seconds"][-1] / 60], [np.mean(scores)], "k*", ms=12, label="final weights (the mean)")
    ax.legend(fontsize=7)


def plot_curves(work: Path, out: Path) -> list[Path]:
    """One PNG per trained stage of `work` (loss and, when recorded, test Dice per organ, or a context stage's
    held-out Dice, against minutes)."""
    from eval.plots import save_figure   # first: it selects the Agg backend; the atomic write
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for curve in sorted(work.glob("**/curve.csv")):
        c = _read_curve(curve)
        if not c:
            continue
        name = "_".join(curve.parent.relative_to(work).parts)
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        minutes = c["seconds"] / 60
        ax[0].plot(minutes, c["loss"], color="k")
        ax[0].set(xlabel="training minutes", title=f"{name}: loss", ylabel="Dice + CE loss (" + (
            "the batch at that iteration)" if "holdout_dice" in c else "last 50 it.)"))
        dice = [k for k in c if k.startswith("dice_")]
        for k in dice:
            organ = int(k.split("_")[1])
            ax[1].plot(minutes, c[k], label=ORGAN_NAMES.get(organ, k))
        if dice:
            ax[1].plot(minutes, np.mean([c[k] for k in dice], axis=0), color="k", lw=2, label="mean")
            ax[1].legend(fontsize=7)
        title = "CHAOS test scans (reported, never used to choose)"
        if "holdout_dice" in c:   # a context stage (context.py): its organ on the held-out label maps
            ax[1].plot(minutes, c["holdout_dice"], color="k", lw=2, label="held-out maps")
            title = "held-out FLARE22 label maps (never trained on)"
        _mark_weight_mean(ax[1], c, curve.parent / "summary.json", dice)
        ax[1].set(xlabel="training minutes", ylabel="DSC on the stage grid", ylim=(0, 1), title=title)
        for a in ax:
            a.grid(alpha=0.3)
        if len(minutes) >= 2:   # the iteration axis needs two points to map minutes to iterations
            top = ax[0].secondary_xaxis("top", functions=(
                lambda m, s=c: np.interp(m, s["seconds"] / 60, s["iteration"]),
                lambda i, s=c: np.interp(i, s["iteration"], s["seconds"] / 60)))
            top.set_xlabel("iterations")
        fig.tight_layout()
        written.append(save_figure(fig, out / f"curve_{name}.png", dpi=80))
    return written


def plot_translator(run: Path, out_png: Path) -> Path | None:
    """A CycleGAN run's curves against training minutes: its losses (loss_log.jsonl, mean per epoch) and its quality
    (quality_curve.csv: the segmenter's Dice on translated held-out CT, the cycle error)."""
    from eval.plots import save_figure   # first: it selects the Agg backend; the atomic write
    import matplotlib.pyplot as plt

    log, curve = run / "loss_log.jsonl", run / "quality_curve.csv"
    if not curve.is_file():
        return None
    q = _read_curve(curve)
    epochs: dict[int, list[dict]] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                epochs.setdefault(int(rec["epoch"]), []).append(rec)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    if epochs:
        ep = np.array(sorted(epochs))
        for key in ("G", "D_A", "D_B", "S", "cycle_A", "seg_G"):
            if key in epochs[ep[0]][0]:
                ax[0].plot(ep, [np.mean([r[key] for r in epochs[e]]) for e in ep], label=key)
        ax[0].set_yscale("log")
        ax[0].legend(fontsize=7)
    ax[0].set(xlabel="epoch", ylabel="loss (mean per epoch)", title=f"{run.name}: losses")
    minutes = q["trained_s"] / 60
    ax[1].plot(minutes, q["segmentation_dice"], "o-", color="k", label="S Dice on translated held-out CT")
    ax[1].plot(minutes, q["structure_preservation"], "s--", color="tab:blue", label="structure preservation")
    ax[1].set(xlabel="training minutes", ylabel="mean Dice", ylim=(0, 1), title=f"{run.name}: quality")
    twin = ax[1].twinx()
    twin.plot(minutes, q["cycle_mae_hu"], ":", color="tab:red", label="cycle MAE (HU)")
    twin.set_ylabel("cycle MAE (HU)", color="tab:red")
    ax[1].legend(fontsize=7, loc="lower right")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=80)


def score_model(model: Path, out: Path, data: Path = protocol.REAL_DATA, threads: int | None = None) -> Path:
    """Score a weights/<model> folder by what it serves: an MRI model on the CHAOS test scans (report.score,
    out/scores.csv), a PET model by the check on the real FDG PET scans (pet.check_model, out/pet_check.csv)."""
    from inference.model_folder import load_model_folder

    pet = "PET" in load_model_folder(model, verify=False).card.modalities
    return (check_model if pet else score)(model, out, data, threads)
