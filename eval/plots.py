"""PNG plots (matplotlib, Agg backend): per-organ DSC/NSD box plots and per-case resource curves."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from inference.atomic import atomic_path  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import Organ
    from .resources import CaseMeasurement
    from .score import CaseRow

__all__ = ["score_boxplots", "resource_curves", "save_figure"]


def save_figure(figure, path: Path, dpi: int = 120) -> Path:
    """`figure` as path.png (temporary name, then rename; its folder made), then closed, written or not."""
    path = Path(path).with_suffix(".png")
    try:
        with atomic_path(path, mkdir=True) as tmp:
            figure.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(figure)
    return path


def score_boxplots(rows: Sequence["CaseRow"], organs: Sequence["Organ"], path: Path) -> None:
    """Two panels (DSC, NSD), one box per organ over cases; NaN values are left out."""
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(organs) + 2), 7), sharex=True)
    names = [f"{o.label} {o.name}" for o in organs]
    for axis, metric in zip(axes, ("dsc", "nsd"), strict=True):
        data = [
            [getattr(r, metric) for r in rows if r.organ == o.label and not math.isnan(getattr(r, metric))]
            for o in organs
        ]
        axis.boxplot([d if d else [math.nan] for d in data], showmeans=True)
        axis.set_ylabel(metric.upper())
        axis.set_ylim(-0.02, 1.02)
        axis.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(1, len(organs) + 1), names, rotation=45, ha="right")
    axes[0].set_title(f"per-organ scores over {len({r.case for r in rows})} cases")
    figure.tight_layout()
    save_figure(figure, path)


def resource_curves(measurement: "CaseMeasurement", path: Path) -> None:
    """GPU memory (if measured), RAM and CPU against time for one case, with the run's end marked."""
    panels = [("RAM used, whole machine (MB)", measurement.ram_times_s, measurement.ram_used_mb)]
    if measurement.gpu_measured:
        panels.insert(0, ("GPU memory used, whole device (MiB)", measurement.gpu_times_s, measurement.gpu_used_mib))
    panels.append(("CPU utilisation, whole machine (%)", measurement.ram_times_s, measurement.cpu_used_percent))
    figure, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), sharex=True)
    start_s = measurement.run_start_offset_s
    for axis, (title, times, values) in zip(axes, panels, strict=True):
        axis.plot(list(times), list(values), "b-")
        if values is measurement.ram_used_mb:
            axis.plot(list(times), list(measurement.tree_rss_mb), "g-", label="process tree RSS")
            axis.legend(fontsize="small")
        for x in (start_s, start_s + measurement.time_s):
            axis.axvline(x, color="r", linestyle="--", linewidth=1)
        axis.set_ylabel(title, fontsize="small")
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("time since the sampler started (s); dashed: start and end of the run")
    gpu = (
        f"max GPU {measurement.max_gpu_mib} MiB, AUC {measurement.auc_gpu_mib_s} MiB*s"
        if measurement.gpu_measured
        else "GPU NOT measured"
    )
    axes[0].set_title(f"{measurement.case}: {measurement.time_s:.2f} s, {gpu}", fontsize="medium")
    figure.tight_layout()
    save_figure(figure, path)
