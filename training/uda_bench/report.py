"""Score the rows on the test cases with the engine and `eval/`, and write the results: per-organ table
(markdown + CSV), box plots, sample overlays, the self-training filter counts (Table 4).

Each row's model is run by the engine exactly as the submission runs it (`python -m inference`, fresh process,
test images in, label files out), then scored by `python -m eval score` on liver, kidneys and spleen.
"""
from __future__ import annotations

import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from inference.labels import FLARE_ORGANS, PET_ORGANS

from training.pet_check import PET_CASES, check_rows, pet_markdown, read_pet_check_placed, write_check

from .protocol import MRI_ROWS, PET_ROWS, ROW_TITLES, ROWS, SCORED_ORGANS, TEST_CASES
from training.runner import run_logged

PY = sys.executable
ORGAN_NAMES = {o: FLARE_ORGANS[o] for o in SCORED_ORGANS}
PET_ORGAN_NAMES = PET_ORGANS


def _predict(work: Path, row: str, images: Path, device: str, backend: str, threads: int | None,
             extra: tuple[str, ...] = ()) -> tuple[Path, float]:
    """The engine (`python -m inference`, a fresh process, as the submission runs) on `images` with model r<row>."""
    from training.export import add_onnx

    model = work / "models" / f"r{row}"
    if not (model / "model.json").is_file():
        raise FileNotFoundError(f"{model}: no exported model for row {row} (run the benchmark first)")
    if backend in ("auto", "onnx"):
        add_onnx(model)          # the engine's default runtime; the benchmark exports torch weights only
    pred = work / "pred" / f"r{row}"
    argv = [PY, "-m", "inference", str(images), str(pred), "--weights", str(work / "models"),
            "--model", f"r{row}", "--device", device, "--backend", backend, "--log-dir", str(work / "pred_qc" / f"r{row}"),
            *extra]
    if threads:
        argv += ["--threads", str(threads)]
    t0 = time.monotonic()
    run_logged(argv, work / "logs" / f"predict_r{row}.log")
    return pred, time.monotonic() - t0


def score_row(work: Path, row: str, device: str = "cpu", backend: str = "auto", threads: int | None = None) -> Path:
    """Predict the test cases with model r<row> and score them; returns the CSV (case, organ, dsc, nsd).
    Row P (no PET labels here) gets the plausibility check instead: see `check_pet_row`."""
    if row in PET_ROWS:
        return check_pet_row(work, row, device, backend, threads)
    pred, seconds = _predict(work, row, work / "data/test_images", device, backend, threads)
    out = work / "scores" / f"r{row}.csv"
    run_logged([PY, "-m", "eval", "score", str(pred), str(work / "data/test_labels"), "--csv", str(out),
          "--organs", ",".join(str(o) for o in SCORED_ORGANS), "--strict-geometry", "--no-plots"],
         work / "logs" / f"score_r{row}.log")
    (work / "scores" / f"r{row}.json").write_text(json.dumps({"predict_seconds": round(seconds, 1)}) + "\n")
    return out


def check_pet_row(work: Path, row: str, device: str = "cpu", backend: str = "auto", threads: int | None = None,
                  tta: bool = True) -> Path:
    """Segment the FDG PET scans with model r<row> and check plausibility (training.pet_check: PET labels only,
    adult organ volumes, relative positions). Writes and returns WORK/scores/r<row>_pet.csv."""
    extra = () if tta else ("--no-tta",)
    pred, seconds = _predict(work, row, work / "data/pet_images", device, backend, threads, extra)
    out = work / "scores" / f"r{row}_pet.csv"
    rows, ok, all_placed = check_rows(pred, PET_CASES)
    write_check(out, rows)
    (work / "scores" / f"r{row}.json").write_text(json.dumps({"predict_seconds": round(seconds, 1),
                                                              "all_plausible": bool(ok),
                                                              "all_placed": bool(all_placed)}) + "\n")
    return out


def read_scores(csv_path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    out = {}
    with open(csv_path) as fh:
        for r in csv.DictReader(fh):
            out[(r["case"], int(r["organ"]))] = (float(r["dsc"]), float(r["nsd"]))
    return out


def score_summary(csv_path: Path, cases=TEST_CASES, organs=SCORED_ORGANS) -> dict:
    """{organ: (mean dsc, mean nsd), 'mean': (dsc, nsd), 'cases': {case: mean dsc}} of one scores CSV."""
    sc = read_scores(csv_path)
    entry: dict = {}
    for organ in organs:
        vals = [sc[(c, organ)] for c in cases if (c, organ) in sc]
        entry[organ] = (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])))
    entry["mean"] = (float(np.mean([entry[o][0] for o in organs])), float(np.mean([entry[o][1] for o in organs])))
    entry["cases"] = {c: float(np.mean([sc[(c, o)][0] for o in organs if (c, o) in sc])) for c in cases}
    return entry


def summary(work: Path, rows: list[str]) -> dict:
    """{row: score_summary of its scores CSV} for the rows that are scored."""
    return {row: score_summary(work / "scores" / f"r{row}.csv") for row in rows
            if (work / "scores" / f"r{row}.csv").is_file()}


def markdown_lines(titled: list[tuple[str, dict]], organs=SCORED_ORGANS) -> list[str]:
    """Header and one line per (row title, score_summary entry): DSC / NSD per organ in %, then the means."""
    head = "| row | " + " | ".join(FLARE_ORGANS[o] for o in organs) + " | mean DSC | mean NSD |"
    lines = [head, "|" + "---|" * (len(organs) + 3)]
    for title, e in titled:
        cells = [f"{100 * e[o][0]:.1f} / {100 * e[o][1]:.1f}" for o in organs]
        lines.append(f"| {title} | " + " | ".join(cells) + f" | **{100 * e['mean'][0]:.1f}** | "
                     f"{100 * e['mean'][1]:.1f} |")
    return lines


def markdown_table(table: dict) -> str:
    lines = markdown_lines([(ROW_TITLES[row], table[row]) for row in ROWS if row in table])
    return "\n".join(lines) + "\n\nCells: DSC / NSD (%), mean over the test cases " + ", ".join(TEST_CASES) + ".\n"


def boxplot(work: Path, table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ROWS if r in table]
    fig, axes = plt.subplots(1, len(SCORED_ORGANS), figsize=(3.2 * len(SCORED_ORGANS), 3.6), sharey=True)
    for ax, organ in zip(axes, SCORED_ORGANS, strict=True):
        data = []
        for r in rows:
            sc = read_scores(work / "scores" / f"r{r}.csv")
            data.append([sc[(c, organ)][0] for c in TEST_CASES if (c, organ) in sc])
        ax.boxplot(data, tick_labels=[f"({r})" for r in rows])
        ax.set_title(ORGAN_NAMES[organ])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("DSC")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def overlay_grid(work: Path, rows: list[str], path: Path, case: str = TEST_CASES[0]) -> None:
    """One axial slice of `case` through the liver: manual labels and each row's prediction as contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    img = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "data/test_images" / f"{case}_0000.nii.gz")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "data/test_labels" / f"{case}.nii.gz")))
    z = int(np.argmax((ref > 0).sum(axis=(1, 2))))
    lo, hi = np.percentile(img, (1, 99))
    panels = [("manual labels", ref)] + [
        (f"row ({r})", sitk.GetArrayFromImage(sitk.ReadImage(str(work / "pred" / f"r{r}" / f"{case}.nii.gz"))))
        for r in rows if (work / "pred" / f"r{r}" / f"{case}.nii.gz").is_file()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    colours = {1: "tab:red", 2: "tab:green", 3: "tab:blue", 13: "tab:orange"}
    for ax, (title, lab) in zip(np.atleast_1d(axes), panels, strict=True):
        _panel(ax, img[z], lab[z], colours, title, cmap="gray", vmin=lo, vmax=hi)
    fig.suptitle(f"{case}, slice {z}: liver red, right kidney green, spleen blue, left kidney orange", fontsize=9)
    _save(fig, path, dpi=90)


def _panel(ax, image2d: np.ndarray, labels2d: np.ndarray, colours: dict[int, str], title: str, **imshow) -> None:
    """One image slice with each organ's outline (`imshow` keywords: colour map, window, origin, aspect)."""
    ax.imshow(image2d, **imshow)
    for organ, colour in colours.items():
        m = labels2d == organ
        if m.any():
            ax.contour(m.astype(float), levels=[0.5], colors=colour, linewidths=1.0, origin=imshow.get("origin"))
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _save(fig, path: Path, dpi: int) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def pet_overlay(work: Path, row: str, path: Path) -> None:
    """One coronal slice per PET scan (through the most labelled row of voxels) with row `row`'s labels as
    contours: where the organs were put, the thing the volume check cannot see."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    fig, axes = plt.subplots(1, len(PET_CASES), figsize=(4.0 * len(PET_CASES), 6.5))
    colours = {1: "tab:red", 2: "tab:green", 3: "tab:blue", 4: "tab:orange"}
    for ax, case in zip(np.atleast_1d(axes), PET_CASES, strict=True):
        img = sitk.ReadImage(str(work / "data/pet_images" / f"{case}_0000.nii.gz"))
        a = sitk.GetArrayFromImage(img)
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "pred" / f"r{row}" / f"{case}.nii.gz")))
        y = int(np.argmax((lab > 0).sum(axis=(0, 2)))) if lab.any() else a.shape[1] // 2
        sx, _, sz = img.GetSpacing()
        _panel(ax, a[:, y, :], lab[:, y, :], colours, f"{case}, coronal row {y}", cmap="gray_r", vmin=0,
               vmax=float(np.percentile(a, 99.5)), origin="lower", aspect=sz / sx)
    fig.suptitle(f"row ({row}) on FDG PET: liver red, right kidney green, spleen blue, left kidney orange", fontsize=9)
    _save(fig, path, dpi=80)


def table4_section(work: Path, scored: bool) -> str:
    """The self-training filter's counts (the paper's Table 4) of row 3's cycle, one row per target set, from
    WORK/rows/3/pseudo/<target>/table4.json; when row 3 is not scored and no scan survived, says so ("" when the
    filter has not run)."""
    from training.selftrain.filtering import format_table4, load_table4

    rows = [load_table4(f) for f in sorted((work / "rows/3/pseudo").glob("*/table4.json"))]
    if not rows:
        return ""
    text = "\n## Self-training filter (Table 4)\n\n" + format_table4(rows) + "\n"
    if not scored and not any(r.top_k_dice for r in rows):
        text += ("\nRow (3) was not trained: no target scan passed the filter (each column counts the scans "
                 "left after that rule), so self-training had no pseudo-label to learn from.\n")
    return text


def write_report(work: Path, out: Path, rows: list[str], machine: str) -> Path:
    """results.md + scores.csv + boxplot.png + overlays.png (+ table4.md, cyclegan quality) in OUT."""
    out.mkdir(parents=True, exist_ok=True)
    table = summary(work, rows)
    with open(out / "scores.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "case", "organ", "dsc", "nsd"])
        for r in ROWS:
            p = work / "scores" / f"r{r}.csv"
            if p.is_file():
                for (case, organ), (d, n) in sorted(read_scores(p).items()):
                    w.writerow([r, case, organ, f"{d:.4f}", f"{n:.4f}"])
    if table:   # MRI rows scored (row P alone has no Dice to plot)
        boxplot(work, table, out / "boxplot.png")
        overlay_grid(work, [r for r in MRI_ROWS if r in table], out / "overlays.png")
    parts = [f"# UDA benchmark on real CHAOS T2 MRI\n\nMachine: {machine}. Python {platform.python_version()}.\n",
             markdown_table(table)]
    state = work / "state"
    times = {p.stem: json.loads(p.read_text()).get("seconds") for p in sorted(state.glob("*.json"))}
    parts.append("\n## Step wall times (s)\n\n" + "\n".join(f"- {k}: {v}" for k, v in times.items()) + "\n")
    for r in PET_ROWS:
        chk = work / "scores" / f"r{r}_pet.csv"
        if r in rows and chk.is_file():
            parts.append(f"\n## {ROW_TITLES[r]}: plausibility on the real FDG PET scans\n\n" + pet_markdown(chk)
                         + f"\nWhere the organs were put: `pet_overlay_r{r}.png`.\n")
            if (work / "data/pet_images").is_dir():
                pet_overlay(work, r, out / f"pet_overlay_r{r}.png")
    t4 = table4_section(work, scored="3" in table)
    if t4:
        parts.append(t4)
    for kind in ("attn", "plain", "pet"):
        q = work / "cyclegan" / kind / "quality.json"
        if q.is_file():
            parts.append(f"\n## CycleGAN ({kind}) quality.json\n\n```\n{q.read_text().strip()}\n```\n")
    (out / "results.md").write_text("\n".join(parts))
    (out / "summary.json").write_text(json.dumps({r: {"mean_dsc": e["mean"][0], "mean_nsd": e["mean"][1],
                                                      **{str(o): e[o][0] for o in SCORED_ORGANS}}
                                                  for r, e in table.items()}, indent=2) + "\n")
    return out / "results.md"


def ship(work: Path, row: str, out: Path, name: str, backends: tuple[str, ...] = ("onnx",), machine: str = "",
         note: str = "") -> Path:
    """Copy row `row`'s model into `out` (e.g. weights/<name>) with the chosen backends only, and a card that
    records where it came from: benchmark row, profile, per-organ test scores, machine. Weights first, card last."""
    from dataclasses import replace

    from inference.model_folder import load_model_folder, write_card
    from training.export import add_onnx, copy_weight_file

    src = work / "models" / f"r{row}"
    if "onnx" in backends:
        add_onnx(src)
    model = load_model_folder(src, verify=True)
    pet_check = work / "scores" / f"r{row}_pet.csv"
    table = summary(work, [row])
    if row not in table and not (row in PET_ROWS and pet_check.is_file()):
        scored = pet_check if row in PET_ROWS else work / "scores" / f"r{row}.csv"
        raise FileNotFoundError(f"{scored}: row {row} is not scored; ship scored rows only")
    out.mkdir(parents=True, exist_ok=True)
    stages, sha = {}, {}
    for stage_name in ("coarse", "fine"):
        cfg = getattr(model.card, stage_name)
        files = {b: f for b, f in cfg.files.items() if b in backends}
        if not files:
            raise ValueError(f"{src}: stage {stage_name} has none of the backends {backends}")
        for f in files.values():
            sha[f] = copy_weight_file(src / f, out / f)
        stages[stage_name] = replace(cfg, files=files)
    profile = json.loads((work / "inputs/profile.json").read_text()) if (work / "inputs/profile.json").is_file() else {}
    prov = dict(model.card.provenance)
    bench = {"row": row, "row_title": ROW_TITLES[row], "profile": profile.get("name"), "machine": machine}
    if row in table:
        e = table[row]
        bench.update(test_cases=list(TEST_CASES),
                     test_dsc={ORGAN_NAMES[o]: round(e[o][0], 4) for o in SCORED_ORGANS},
                     test_nsd={ORGAN_NAMES[o]: round(e[o][1], 4) for o in SCORED_ORGANS},
                     mean_dsc=round(e["mean"][0], 4))
    else:   # row P: no PET labels, the plausibility check's organ volumes
        chk = read_pet_check_placed(pet_check)
        bench.update(check_cases=list(PET_CASES), check="organ volumes (ml) within PET_PLAUSIBLE_ML, no labels",
                     volumes_ml={c: {PET_ORGAN_NAMES[o]: chk[(c, o)][0] for o in PET_ORGAN_NAMES} for c in PET_CASES},
                     all_plausible=all(good for _, good, _ in chk.values()))
        if all(placed is not None for _, _, placed in chk.values()):   # CSVs since the placement column
            bench.update(placed={c: {PET_ORGAN_NAMES[o]: chk[(c, o)][2] for o in PET_ORGAN_NAMES} for c in PET_CASES},
                         all_placed=all(placed for _, _, placed in chk.values()),
                         check=bench["check"] + "; positions relative to each other (pet_placement)")
    prov["uda_benchmark"] = {**bench, "note": note}
    card = replace(model.card, name=name, coarse=stages["coarse"], fine=stages["fine"], sha256=sha, provenance=prov,
                   description=model.card.description + (f" {note}" if note else ""))
    write_card(card, out)
    load_model_folder(out, verify=True)
    return out
