"""Score a prediction folder against a label folder (``python -m eval score``).

Contract: ``python -m eval score PRED_DIR LABEL_DIR --csv OUT.csv [--modality mri|pet]
[--organs 1,2,3,13] [--strict-geometry]`` writes OUT.csv with one row per case x organ and
the columns ``case, organ, dsc, nsd`` (organ = label id), plus next to it
``<stem>_summary.csv``, ``<stem>_summary.md`` (mean +- sd per organ, then the mean over
organs; also printed) and ``<stem>_boxplot.png``.

Cases are the label files ``<case>.nii.gz`` in LABEL_DIR; predictions are ``<case>.nii.gz``
in PRED_DIR.

Behaviour, with the organizers' choices reproduced by default:
- spacing comes from the label's header; the prediction's header is ignored (default).
  ``strict_geometry`` refuses a prediction whose affine (spacing, origin, direction)
  differs from the label's by more than ``geometry_atol_mm``;
- a missing prediction is scored as an empty prediction (organs present in the label
  score 0, absent organs 1) and reported by name. DEVIATION: the organizers iterate over
  the prediction files, so a missing case simply drops out of their mean;
- an unreadable prediction, or one whose array shape differs from the label's (the
  organizers' script would crash), is reported in one line and scored as empty;
- an unreadable label file is reported and its case skipped;
- prediction files without a label are reported and ignored;
- the summary mean skips NaN values (a single-slice aorta/IVC/esophagus gives NaN, see
  ``eval.metrics``); the standard deviation is the sample one (ddof=1), like pandas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from inference.atomic import write_csv, write_text

from .io_utils import LabelReadError, read_label_map
from .metrics import Organ, OrganScore, organs_for, score_case

__all__ = ["ScoreConfig", "CaseRow", "OrganSummary", "ScoreReport", "score_folders", "summarise", "write_outputs"]

NIFTI_SUFFIX = ".nii.gz"


@dataclass(frozen=True)
class ScoreConfig:
    """What to score and how."""

    pred_dir: Path
    label_dir: Path
    csv_path: Path
    modality: str = "mri"
    organ_ids: tuple[int, ...] | None = None
    strict_geometry: bool = False
    geometry_atol_mm: float = 1e-3
    plots: bool = True


@dataclass(frozen=True)
class CaseRow:
    """One CSV row."""

    case: str
    organ: int
    dsc: float
    nsd: float


@dataclass(frozen=True)
class OrganSummary:
    """Mean and sample sd over cases of one organ (NaN values skipped and counted)."""

    label: int
    name: str
    n_cases: int
    n_nan: int
    dsc_mean: float
    dsc_sd: float
    nsd_mean: float
    nsd_sd: float


@dataclass
class ScoreReport:
    """Everything a scoring run produced, including the problems it met."""

    organs: tuple[Organ, ...]
    rows: list[CaseRow] = field(default_factory=list)
    missing_predictions: list[str] = field(default_factory=list)
    refused_predictions: list[str] = field(default_factory=list)  # "case: reason"
    unreadable_labels: list[str] = field(default_factory=list)  # "case: reason"
    extra_predictions: list[str] = field(default_factory=list)
    geometry_warnings: list[str] = field(default_factory=list)
    strict_geometry_refusals: list[str] = field(default_factory=list)  # subset of refused_predictions

    @property
    def failed(self) -> bool:
        """True when a label could not be read, or ``strict_geometry`` refused a prediction."""
        return bool(self.unreadable_labels) or bool(self.strict_geometry_refusals)


def _case_name(path: Path) -> str:
    return path.name[: -len(NIFTI_SUFFIX)]


def _list_cases(folder: Path) -> dict[str, Path]:
    return {_case_name(p): p for p in sorted(folder.iterdir()) if p.is_file() and p.name.endswith(NIFTI_SUFFIX)}


def _geometry_difference(label_affine: np.ndarray, pred_affine: np.ndarray, atol_mm: float) -> str | None:
    if np.allclose(label_affine, pred_affine, rtol=0.0, atol=atol_mm):
        return None
    spacing_l = np.linalg.norm(label_affine[:3, :3], axis=0)
    spacing_p = np.linalg.norm(pred_affine[:3, :3], axis=0)
    return (
        f"geometry differs from the label (spacing {np.round(spacing_p, 4).tolist()} vs "
        f"{np.round(spacing_l, 4).tolist()} mm, origin {np.round(pred_affine[:3, 3], 3).tolist()} vs "
        f"{np.round(label_affine[:3, 3], 3).tolist()} mm, or direction)"
    )


def score_folders(config: ScoreConfig, log=print) -> ScoreReport:
    """Score every labelled case; problems are logged (one line each) and collected in the report."""
    organs = organs_for(config.modality, config.organ_ids)
    report = ScoreReport(organs=organs)
    for folder, what in ((config.pred_dir, "prediction"), (config.label_dir, "label")):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    labels = _list_cases(Path(config.label_dir))
    predictions = _list_cases(Path(config.pred_dir))
    if not labels:
        raise FileNotFoundError(f"no *{NIFTI_SUFFIX} label files in {config.label_dir}")
    report.extra_predictions = sorted(set(predictions) - set(labels))
    for case in report.extra_predictions:
        log(f"WARNING {case}: prediction {predictions[case]} has no label in {config.label_dir}; ignored")
    for case, label_path in labels.items():
        try:
            label = read_label_map(label_path)
        except LabelReadError as error:
            report.unreadable_labels.append(f"{case}: {error}")
            log(f"ERROR {case}: label skipped: {error}")
            continue
        pred_data = None
        if case not in predictions:
            report.missing_predictions.append(case)
            log(f"WARNING {case}: no prediction {Path(config.pred_dir) / (case + NIFTI_SUFFIX)}; scored as empty")
        else:
            try:
                pred = read_label_map(predictions[case])
                if pred.data.shape != label.data.shape:
                    if config.strict_geometry:
                        report.strict_geometry_refusals.append(case)
                    raise LabelReadError(
                        f"{pred.path}: shape {pred.data.shape} differs from the label's {label.data.shape}"
                    )
                difference = _geometry_difference(label.affine, pred.affine, config.geometry_atol_mm)
                if difference and config.strict_geometry:
                    report.strict_geometry_refusals.append(case)
                    raise LabelReadError(f"{pred.path}: {difference} (--strict-geometry)")
                if difference:
                    report.geometry_warnings.append(f"{case}: {difference}")
                    log(f"WARNING {case}: {pred.path}: {difference}; ignored as the organizers do")
                pred_data = pred.data
            except LabelReadError as error:
                report.refused_predictions.append(f"{case}: {error}")
                log(f"ERROR {case}: prediction refused, scored as empty: {error}")
        if pred_data is None:
            pred_data = np.zeros_like(label.data)
        scores: list[OrganScore] = score_case(label.data, pred_data, label.spacing_mm, organs, config.modality)
        report.rows.extend(CaseRow(case, s.label, s.dsc, s.nsd) for s in scores)
    return report


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = float(np.mean(finite))
    sd = float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
    return mean, sd


def summarise(report: ScoreReport) -> tuple[list[OrganSummary], tuple[float, float]]:
    """Per-organ mean +- sd over cases, and the (DSC, NSD) mean over organs of those means."""
    summaries = []
    for organ in report.organs:
        rows = [r for r in report.rows if r.organ == organ.label]
        dsc_mean, dsc_sd = _mean_sd([r.dsc for r in rows])
        nsd_mean, nsd_sd = _mean_sd([r.nsd for r in rows])
        n_nan = sum(1 for r in rows if math.isnan(r.dsc) or math.isnan(r.nsd))
        summaries.append(OrganSummary(organ.label, organ.name, len(rows), n_nan, dsc_mean, dsc_sd, nsd_mean, nsd_sd))
    overall = (
        float(np.nanmean([s.dsc_mean for s in summaries])) if summaries else float("nan"),
        float(np.nanmean([s.nsd_mean for s in summaries])) if summaries else float("nan"),
    )
    return summaries, overall


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}"


def summary_markdown(summaries: list[OrganSummary], overall: tuple[float, float]) -> str:
    lines = [
        "| organ | name | cases | NaN | DSC mean | DSC sd | NSD mean | NSD sd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.label} | {s.name} | {s.n_cases} | {s.n_nan} | {_fmt(s.dsc_mean)} | {_fmt(s.dsc_sd)} | "
            f"{_fmt(s.nsd_mean)} | {_fmt(s.nsd_sd)} |"
        )
    lines.append(f"| all | mean over organs | | | {_fmt(overall[0])} | | {_fmt(overall[1])} | |")
    return "\n".join(lines) + "\n"


def output_paths(csv_path: Path) -> dict[str, Path]:
    """Where the summary and plot files go, next to the CSV."""
    csv_path = Path(csv_path)
    stem = csv_path.name[:-4] if csv_path.name.lower().endswith(".csv") else csv_path.name
    return {
        "summary_csv": csv_path.with_name(stem + "_summary.csv"),
        "summary_md": csv_path.with_name(stem + "_summary.md"),
        "boxplot_png": csv_path.with_name(stem + "_boxplot.png"),
    }


def write_outputs(config: ScoreConfig, report: ScoreReport, log=print) -> dict[str, Path]:
    """Write the per-case CSV, the summary (CSV + markdown, also logged) and the box plots."""
    write_csv(
        config.csv_path,
        ["case", "organ", "dsc", "nsd"],
        ([r.case, r.organ, _fmt(r.dsc), _fmt(r.nsd)] for r in report.rows),
        mkdir=True,
    )
    paths = output_paths(config.csv_path)
    summaries, overall = summarise(report)
    write_csv(
        paths["summary_csv"],
        ["organ", "name", "n_cases", "n_nan", "dsc_mean", "dsc_sd", "nsd_mean", "nsd_sd"],
        [
            [s.label, s.name, s.n_cases, s.n_nan, _fmt(s.dsc_mean), _fmt(s.dsc_sd), _fmt(s.nsd_mean), _fmt(s.nsd_sd)]
            for s in summaries
        ]
        + [["all", "mean_over_organs", "", "", _fmt(overall[0]), "", _fmt(overall[1]), ""]],
        mkdir=True,
    )
    markdown = summary_markdown(summaries, overall)
    write_text(paths["summary_md"], markdown, mkdir=True)
    log(markdown.rstrip("\n"))
    written = {"csv": Path(config.csv_path), **{k: v for k, v in paths.items() if k != "boxplot_png"}}
    if config.plots and report.rows:
        from .plots import score_boxplots

        score_boxplots(report.rows, report.organs, paths["boxplot_png"])
        written["boxplot_png"] = paths["boxplot_png"]
    problems = [
        ("missing predictions (scored as empty)", report.missing_predictions),
        ("refused predictions (scored as empty)", report.refused_predictions),
        ("unreadable labels (cases skipped)", report.unreadable_labels),
        ("predictions without a label (ignored)", report.extra_predictions),
    ]
    for title, items in problems:
        if items:
            log(f"{title}: {len(items)}: " + "; ".join(items))
    return written
