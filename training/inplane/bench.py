"""The benchmark's row runner: one row per command, every step resumable, results that travel between machines.

`run_row` trains the shared coarse stage (once per work folder), the row's fine stage, exports the row's model to
WORK/models/r<row> and scores it on the test scans (WORK/scores/r<row>/). Each step is skipped when its output
exists; a training stopped half-way resumes from its checkpoint. `publish` copies what a reader and a later run
need into a results folder (committed): the table, the learning curves (PNG + CSV), every stage's summary and final
weights (a few MB), the scores. `seed_work` puts published stages back into a new work folder, so a run on
another machine continues where the last one stopped instead of training again.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from inference.atomic import atomic_path, copy_file, write_json, write_text

from . import protocol
from .layout import STAGE_FILES, machine, score_file, stage_dirs
from .recipe import Profile, as_profile


def run_row(work: Path, profile: str, row: str, data: Path = protocol.REAL_DATA, device: str = "cpu",
            threads: int | None = None, curve_on_test: bool = True) -> Path:
    """Run (on the shared step runner, steps.row_steps) what is missing or outdated for `row` and for the rows it
    needs: the pack, train, export and score; returns the scores CSV (an MRI row: DSC / NSD on the CHAOS test
    scans; a PET row: the plausibility check on the real FDG PET scans, pet.check_model). `profile`: a profile
    name or JSON path (the steps' commands name it)."""
    from .steps import run_rows

    prof = as_profile(profile)
    res = run_rows(work, profile, [row], None, data, device, 1, threads, curve_on_test)
    if not res.ok:
        why = {k: dict.fromkeys([v.splitlines()[0], v.strip().splitlines()[-1]]) for k, v in res.failed.items()}
        raise RuntimeError(f"row {row}: " + "; ".join(f"{k} failed: {' ... '.join(v)}" for k, v in why.items())
                           + (f" (not run: {res.blocked})" if res.blocked else ""))
    return score_file(work, prof, row)


def publish(work: Path, profile: str | Profile, out: Path, weights_of: tuple[str, ...] = ("A",)) -> Path:
    """Copy the results of every scored row of `work` into `out` and write out/table.md: scores, every stage's
    summary and curve, and the final weights of the coarse stage and of the rows in `weights_of` only (those
    that later rows start from; a few MB each, and the GPU machine's upload carries the whole tree)."""
    from .report import plot_curves, table

    prof = as_profile(profile)
    out.mkdir(parents=True, exist_ok=True)
    rows, pet_rows = _publish_scores(work, prof, out)
    _publish_stages(work, out, weights_of)
    plot_curves(out / "stages", out / "curves")
    for row in prof.rows:      # the self-training rows' Table-4 counts and per-scan filter record
        filtered = work / "rows" / row / "pseudo" / "filtered"
        for f in ("table4.md", "table4.json", "filter_report.json"):
            if (filtered / f).is_file():
                copy_file(filtered / f, out / "selftrain" / f"r{row}" / f, mkdir=True)
    _publish_translators(work, out)
    _publish_nnunet(work, out)
    md = table(rows) if rows else "No MRI row scored yet.\n"
    if pet_rows:
        from training.pet_check import pet_markdown

        md += "\n## PET rows: plausibility on the real FDG PET scans\n" + "".join(
            f"\n### {title}\n\n" + pet_markdown(path) for title, path in pet_rows.values())
    write_text(out / "table.md", md)
    write_json(out / "machine.json", {"machine": machine(), "profile": prof.name})
    return out / "table.md"


def _publish_scores(work: Path, prof: Profile, out: Path) -> tuple[dict, dict]:
    """Every scored row's score files -> out/scores/r<row>/; ({MRI row: (title, csv)}, {PET row: (title, csv)})."""
    rows, pet_rows = {}, {}
    for row, r in prof.rows.items():
        csv_path = score_file(work, prof, row)
        if csv_path.is_file():
            dst = out / "scores" / f"r{row}"
            for f in ("scores.csv", "predict.json", "pet_check.csv", "pet_check.json"):
                if (csv_path.parent / f).is_file():
                    copy_file(csv_path.parent / f, dst / f, mkdir=True)
            (pet_rows if r.modality == "PET" else rows)[row] = (r.title, dst / csv_path.name)
    return rows, pet_rows


def _publish_stages(work: Path, out: Path, weights_of: tuple[str, ...]) -> None:
    """Every finished stage's files -> out/stages/; final weights only for the coarse stages and `weights_of`."""
    for stage_dir in [work / "coarse"] + sorted((work / "rows").glob("*/coarse")) + sorted((work / "rows").glob("*/fine")):
        if not (stage_dir / "final.pt").is_file() or not (stage_dir / "summary.json").is_file():
            continue   # unfinished, or weights recovered from a shipped model (seed_model)
        dst = out / "stages" / stage_dir.relative_to(work)
        keep_weights = stage_dir.name == "coarse" or stage_dir.parent.name in weights_of
        for f in STAGE_FILES:
            if (stage_dir / f).is_file() and (f != "final.pt" or keep_weights):
                copy_file(stage_dir / f, dst / f, mkdir=True)
            elif f == "final.pt" and (dst / f).is_file():
                (dst / f).unlink()   # published before with weights, now without


def _publish_nnunet(work: Path, out: Path) -> None:
    """The 3D nnU-Net rows' learning curves: nnU-Net's progress.png, training logs and run arguments of each
    stage -> out/stages/rows/<row>/nnunet/<dataset>/."""
    for fold in sorted((work / "rows").glob("*/nnunet/nnUNet_results/*/*/fold_*")):
        row, dataset = fold.parents[4].name, fold.parents[1].name
        for f in sorted(fold.glob("progress.png")) + sorted(fold.glob("training_log_*.txt")) + sorted(
                fold.glob("c2f_train_args.json")):
            copy_file(f, out / "stages" / "rows" / row / "nnunet" / dataset / f.name, mkdir=True)


TRANSLATOR_FILES = ("options.json", "quality_curve.csv", "quality.json")   # quality.json last: it marks the run done
TRANSLATOR_WEIGHTS = "translator.pt"   # a finished translator's generator (translate.translator_only: ~2 MB)


def _publish_translators(work: Path, out: Path) -> None:
    """Each finished translator: options, quality, curves and its weights (so that `seed_work` gives a later work
    folder the same translated CT without the translator's 85 minutes of training again). Its picture grids stay
    in the work folder: they are renders of the shared real scans, made there, not committed."""
    import torch

    from training.cyclegan.translate import translator_only

    from .report import plot_translator

    for run in sorted((work / "cyclegan").glob("*")):
        if (run / "quality.json").is_file():
            dst = out / "cyclegan" / run.name
            for f in TRANSLATOR_FILES:
                copy_file(run / f, dst / f, mkdir=True)
            ckpt = torch.load(run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)
            with atomic_path(dst / TRANSLATOR_WEIGHTS) as tmp:
                torch.save(translator_only(ckpt), tmp)
            plot_translator(run, out / "curves" / f"cyclegan_{run.name}.png")


def seed_work(results: Path, work: Path) -> list[Path]:
    """Copy published stages (final weights, summary, curve) and finished translators (weights, options, quality)
    into `work` where it has none; returns the folders copied."""
    copied = []
    for final in sorted((results / "stages").glob("**/final.pt")):
        rel = final.parent.relative_to(results / "stages")
        dst = work / rel
        if (dst / "final.pt").is_file():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        for f in STAGE_FILES:
            if (final.parent / f).is_file():
                copy_file(final.parent / f, dst / f)
        copied.append(dst)
    for weights in sorted((results / "cyclegan").glob(f"*/{TRANSLATOR_WEIGHTS}")):
        dst = work / "cyclegan" / weights.parent.name     # prepare_translator then only translates
        if (dst / "quality.json").is_file():
            continue
        copy_file(weights, dst / "checkpoints" / "latest.pt", mkdir=True)
        for f in TRANSLATOR_FILES:
            copy_file(weights.parent / f, dst / f)
        copied.append(dst)
    return copied


def seed_model(work: Path, row: str, model: Path) -> Path:
    """A shipped model folder of row `row` (ONNX, as `ship` writes it; e.g. an earlier weights/ folder from the
    repository's history) -> WORK/models/r<row> (a teacher for the self-training rows) and its fine stage's 2D
    weights -> WORK/rows/<row>/fine/final.pt (a start row), recovered from the ONNX graph (export.stage_from_onnx;
    the logits match the ONNX model's to ~1e-4). A stage or model already there is kept. Returns the model folder."""
    from inference.model_folder import load_model_folder

    from .export import stage_from_onnx

    loaded = load_model_folder(model, verify=True)
    dst = work / "models" / f"r{row}"
    if not (dst / "model.json").is_file():   # copied beside, then renamed: never a half-copied model folder
        tmp = dst.with_name(f".{dst.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(model, tmp)
        tmp.rename(dst)
    fine = stage_dirs(work, row)["fine"]
    cfg = loaded.card.fine
    if not (fine / "final.pt").is_file():   # weights only: no summary, so `publish` never takes it for a trained stage
        from .loop import _save

        fine.mkdir(parents=True, exist_ok=True)
        _save(fine / "final.pt", stage_from_onnx(model / cfg.files["onnx"], cfg.architecture.features_per_stage,
                                                 cfg.num_classes))
    return dst


def ship(work: Path, profile: str | Profile, row: str, out: Path, name: str, note: str = "") -> Path:
    """Copy row `row`'s scored model into `out` (e.g. weights/<name>) with ONNX weights only (the container's
    runtime) and a card recording the benchmark row, per-organ test DSC / NSD, machine and training length.
    Weights first, card last."""

    from inference.model_folder import load_model_folder, write_card
    from training.export import copy_stage, with_stages

    from .report import ORGAN_NAMES, row_summary

    src = work / "models" / f"r{row}"
    csv_path = score_file(work, profile, row)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: row {row} is not scored; ship scored rows only")
    model = load_model_folder(src, verify=True)
    no_onnx = [n for n in model.card.stage_names if "onnx" not in model.card.stage(n).files]
    if no_onnx:
        raise FileNotFoundError(f"{src}: stage(s) {no_onnx} have no ONNX weights; the container ships ONNX only")
    out.mkdir(parents=True, exist_ok=True)
    sha: dict[str, str] = {}
    stages = {n: copy_stage(src, model.card.stage(n), out, n, sha, backends=("onnx",)) for n in model.card.stage_names}
    prov = dict(model.card.provenance)
    title = as_profile(profile).rows[row].title
    if csv_path.name == "pet_check.csv":
        from training.pet_check import PET_CASES

        from .pet import check_summary

        prov["benchmark"] = {
            "protocol": "FDG-PET-like renders of the 30 BTCV label maps; organ volume and placement checks on the "
                        "real FDG PET scans (training/inplane/pet.py)", "row": row, "row_title": title,
            "check_cases": list(PET_CASES), "check": check_summary(csv_path),
            "scored_with": "python -m inference (ONNX Runtime, CPU)", "note": note}
    else:
        e = row_summary(csv_path)
        prov["benchmark"] = {
            "protocol": protocol.NAME, "row": row, "row_title": title,
            "test_cases": list(protocol.TEST_CASES),
            "test_dsc": {ORGAN_NAMES[o]: round(e[o][0], 4) for o in protocol.SCORED_ORGANS},
            "test_nsd": {ORGAN_NAMES[o]: round(e[o][1], 4) for o in protocol.SCORED_ORGANS},
            "mean_dsc": round(e["mean"][0], 4), "mean_nsd": round(e["mean"][1], 4),
            "scored_with": "python -m inference (ONNX Runtime, CPU) + python -m eval score", "note": note}
        robust = work / "robust" / f"r{row}" / "robust.json"   # python -m training.inplane robust --out there
        if robust.is_file():
            prov["benchmark"]["robustness"] = json.loads(robust.read_text())
    card = with_stages(model.card, stages, name=name, sha256=sha, provenance=prov)
    write_card(card, out)
    load_model_folder(out, verify=True)
    return out
