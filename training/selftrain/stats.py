"""Statistics of the labelled CT set: median voxel spacing and per-organ relative volumes (mu_c, sigma_c).

R_c = voxels of organ c / voxels of the bounding box of all organs of the target set (see labels.py). The box
depends on which organs are in the set, so the statistics are computed per target set ("mri": 13 organs, "pet":
liver, kidneys, spleen), each over the CT label maps that carry EVERY organ of that set (a partially annotated
map would give a smaller box and biased ratios; such maps are listed under "excluded"). sigma_c is the sample
standard deviation (ddof 1), so a set needs at least two complete CT maps.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from inference.atomic import write_json

from . import labels as L

FORMAT = "flare-uda selftrain ct-stats v1"


class StatsError(ValueError):
    """Unusable CT labels or statistics file; the message names the file."""


@dataclass(frozen=True)
class OrganStats:
    mean: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class SetStats:
    organs: tuple[int, ...]
    n_cases: int
    relative_volume: dict[int, OrganStats]  # organ -> statistics of R_c over the complete CT maps
    excluded: dict[str, list[int]] = field(default_factory=dict)  # case -> organs it lacks

    def bounds(self, organ: int, n_sigma: float) -> tuple[float, float]:
        s = self.relative_volume[organ]
        return s.mean - n_sigma * s.std, s.mean + n_sigma * s.std


@dataclass(frozen=True)
class CTStats:
    median_spacing_xyz_mm: tuple[float, float, float]
    n_label_maps: int
    source: str
    sets: dict[str, SetStats]  # target set name -> statistics; a set without two complete maps is absent
    format: str = FORMAT

    def for_set(self, name: str, path: Path | str = "stats") -> SetStats:
        if name not in self.sets:
            raise StatsError(f"{path}: no relative-volume statistics for target set {name!r} (fewer than two CT "
                             f"label maps carry all of its organs {list(L.organ_set(name))})")
        return self.sets[name]

    def to_dict(self) -> dict:
        d = asdict(self)
        for s in d["sets"].values():
            s["relative_volume"] = {str(k): v for k, v in s["relative_volume"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CTStats":
        sets = {name: SetStats(
            organs=tuple(int(o) for o in s["organs"]), n_cases=int(s["n_cases"]),
            relative_volume={int(k): OrganStats(**{f: float(v[f]) for f in ("mean", "std", "min", "max")})
                             for k, v in s["relative_volume"].items()},
            excluded={str(k): [int(o) for o in v] for k, v in s.get("excluded", {}).items()})
            for name, s in d["sets"].items()}
        return cls(median_spacing_xyz_mm=tuple(float(v) for v in d["median_spacing_xyz_mm"]),  # type: ignore
                   n_label_maps=int(d["n_label_maps"]), source=str(d.get("source", "")), sets=sets,
                   format=str(d.get("format", "")))


def label_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise StatsError(f"{folder}: CT label folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and (p.name.endswith(".nii.gz") or p.name.endswith(".nii")))
    if not files:
        raise StatsError(f"{folder}: no label map (*.nii.gz) in the CT label folder")
    return files


def compute_stats(ct_labels, progress: bool = True) -> CTStats:
    """Statistics of the label maps of one folder or of several (e.g. BTCV's 12 organs and the FLARE22 maps, whose
    13 give the "mri" set the duodenum: a set's statistics come from the maps that hold every organ of it)."""
    from inference.io import read_label_map   # here: the statistics' types serve a machine without SimpleITK

    from .geometry import physical_spacing_xyz

    folders = [Path(ct_labels)] if isinstance(ct_labels, (str, Path)) else [Path(f) for f in ct_labels]
    files = [f for folder in folders for f in label_files(folder)]
    spacings = []
    ratios: dict[str, list[dict[int, float]]] = {name: [] for name in L.ORGAN_SETS}  # R_c of each complete map
    excluded: dict[str, dict[str, list[int]]] = {name: {} for name in L.ORGAN_SETS}
    for path in tqdm(files, desc="CT label statistics", unit="map", disable=not progress):
        try:   # a FLARE label map: 3D, integer, values 0..13
            image, arr = read_label_map(path, max_label=13, what="FLARE label map")
        except ValueError as exc:
            raise StatsError(str(exc)) from None
        spacings.append(physical_spacing_xyz(image))
        for name, organs in L.ORGAN_SETS.items():
            missing = L.missing_organs(arr, organs)
            if missing:
                excluded[name][path.name] = missing
            else:
                ratios[name].append(L.relative_volumes(arr, organs))
    sets = {}
    for name, organs in L.ORGAN_SETS.items():
        if len(ratios[name]) < 2:
            continue
        v = np.array([[r[o] for r in ratios[name]] for o in organs], dtype=np.float64)  # organ x complete map
        rv = {o: OrganStats(mean=float(x.mean()), std=float(x.std(ddof=1)), min=float(x.min()), max=float(x.max()))
              for o, x in zip(organs, v, strict=True)}
        sets[name] = SetStats(organs=organs, n_cases=len(ratios[name]), relative_volume=rv, excluded=excluded[name])
    median = tuple(round(float(v), 6) for v in np.median(np.asarray(spacings), axis=0))
    return CTStats(median_spacing_xyz_mm=median, n_label_maps=len(files),
                   source=";".join(str(f.resolve()) for f in folders), sets=sets)  # type: ignore[arg-type]


def save_stats(stats: CTStats, path: Path) -> None:
    write_json(path, stats.to_dict(), indent=1, mkdir=True)


def load_stats(path: Path) -> CTStats:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise StatsError(f"{path}: cannot read the statistics file ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise StatsError(f"{path}: not a JSON statistics file ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StatsError(f"{path}: not a statistics file of `python -m training.selftrain stats` "
                         f"(format {raw.get('format') if isinstance(raw, dict) else None!r}, expected {FORMAT!r})")
    try:
        return CTStats.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise StatsError(f"{path}: malformed statistics file ({type(exc).__name__}: {exc})") from None
