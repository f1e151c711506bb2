"""Typed recipes of the in-plane (2D) C2F training: one stage, one appearance policy, one row.

A profile is JSON; `"extends": "cpu"` starts from another profile of this folder and overrides only the keys given
(nested dictionaries merge key by key), so a profile file shows what differs. Spatial values are (y, x) for the
2D patch and (z, y, x) for spacings, with None on z: the stage runs on the scan's own slices.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.profiles import find_profile, read_profile

PROFILE_DIR = Path(__file__).with_name("profiles")


@dataclass(frozen=True)
class Appearance:
    """Intensity augmentation of a training patch (images scaled to [0, 1] per case before it).

    `strong` False: nnU-Net-like mild changes (contrast, gamma, noise, blur). `strong` True adds the appearance
    randomisation of row (A): a random piecewise-linear intensity curve over the whole patch (`curve_knots`
    control points, not monotone: any tissue may become brighter or darker than any other), then a random scale
    and shift per labelled region (each organ, the body outside the organs, the air: SLAug's local
    location-scale idea), then a multiplicative bias field. `p_strong` < 1 leaves that share of the patches
    (1 - p_strong) with their own appearance and the mild changes only."""

    strong: bool = False
    p_strong: float = 1.0
    p_curve: float = 0.9
    curve_knots: int = 6
    p_region: float = 0.8
    region_scale: tuple[float, float] = (0.6, 1.4)
    region_shift: float = 0.2
    p_bias: float = 0.5
    bias_std: float = 0.3
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.3
    noise_std: tuple[float, float] = (0.0, 0.08)
    p_blur: float = 0.2
    blur_sigma_px: tuple[float, float] = (0.5, 1.2)
    p_contrast: float = 0.3
    contrast: tuple[float, float] = (0.75, 1.25)


@dataclass(frozen=True)
class Spatial:
    """Random in-plane affine of every patch: rotation (degrees), isotropic zoom, and extra per-axis stretch."""

    rotation_deg: float = 15.0
    zoom: tuple[float, float] = (0.8, 1.25)
    stretch: float = 0.1
    p_foreground: float = 0.5      # patch centred on a random voxel of a random organ present in the slice
    p_roi_mask: float = 0.5        # everything outside a jittered organ box + margin set to 0 (the engine's pad)
    roi_margin_mm: tuple[float, float] = (10.0, 40.0)


@dataclass(frozen=True)
class StageRecipe:
    """One 2D network: its grid, patch, width, and how long it trains."""

    spacing_mm: tuple[float | None, float, float]
    patch: tuple[int, int]
    features: tuple[int, ...]
    batch: int = 8
    iterations: int = 100_000          # upper bound; `time_budget_s` usually ends the run first
    time_budget_s: float | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    eval_every_s: float = 300.0
    checkpoint_every_s: float = 120.0
    threads: int = 1
    roi_mask: bool = True              # fine stages: train on engine-like ROI crops too (Spatial.p_roi_mask)
    swa_from: float | None = None      # stochastic weight averaging (Izmailov et al., UAI 2018): from this share of
                                       # the run's progress on, the learning rate stays at its cosine value there and
                                       # final.pt is the mean of the weights after every later iteration (None: off)

    def __post_init__(self) -> None:
        if len(self.spacing_mm) != 3 or self.spacing_mm[0] is not None or min(self.spacing_mm[1:]) <= 0:
            raise ValueError(f"spacing_mm must be [null, y, x] with positive y, x, got {self.spacing_mm}")
        stride = 2 ** (len(self.features) - 1)
        if len(self.patch) != 2 or any(p % stride for p in self.patch):
            raise ValueError(f"patch {self.patch} must be two multiples of the network stride {stride}")
        if self.batch < 1 or self.iterations < 1 or self.lr <= 0:
            raise ValueError("batch, iterations and lr must be positive")
        if self.swa_from is not None and not 0 <= self.swa_from < 1:
            raise ValueError(f"swa_from must be in [0, 1) (a share of the run's progress), got {self.swa_from}")


LABEL_RULES = ("vote", "best")        # SelfTraining.labels: the teachers' majority, or the best teacher's map


@dataclass(frozen=True)
class SelfTraining:
    """A self-training row: the teacher rows' models pseudo-label the unlabelled target scans, the dual-stage filter
    (training.selftrain) keeps the plausible ones, and the fine stage trains again on the source + the kept
    target scans (usually from the row's `start` weights). The training label of a kept scan (`labels`):
    "vote", the teachers' majority, the voxels they disagree on left out of the loss; "best", the best teacher's
    map alone (the others only rank the scans). Either way the voxels the best teacher gives an organ outside
    `organ_set` are left out."""

    teachers: tuple[str, ...]          # rows, best first, then second-best (the Dice rule), then more voters
    organ_set: str = "mri_large"       # training.selftrain.labels.ORGAN_SETS: the organs the filter checks
    dice_threshold: float | None = None    # None: the set's default (0.9)
    n_sigma: float = 3.0
    top_k: int | None = None
    p_target: float = 0.5              # share of training patches from the pseudo-labelled target scans
    labels: str = "vote"               # LABEL_RULES: the kept scans' training labels
    target_p_strong: float | None = None   # Appearance.p_strong of the target patches (None: the row's)

    def __post_init__(self) -> None:
        if len(self.teachers) < 2:
            raise ValueError(f"self-training needs at least two teacher rows (best, second), got {self.teachers}")
        if self.labels not in LABEL_RULES:
            raise ValueError(f"labels must be one of {LABEL_RULES}, got {self.labels!r}")
        if not 0 < self.p_target <= 1:
            raise ValueError(f"p_target must be in (0, 1], got {self.p_target}")
        if self.target_p_strong is not None and not 0 <= self.target_p_strong <= 1:
            raise ValueError(f"target_p_strong must be in [0, 1], got {self.target_p_strong}")


@dataclass(frozen=True)
class NnUNet3D:
    """The 3D nnU-Net v2 coarse-to-fine training (training.c2f) of the rows whose `trainer` is "nnunet3d": its
    C2FSpec (JSON: both stages' spacing, patch, network, the label set; {}: training.c2f's default spec), the
    nnU-Net trainer class, learning rate, how long each stage trains (training.c2f.chain.StageTraining fields:
    epochs, iterations, val_iterations, time_budget_s) and its worker processes."""

    spec: dict[str, Any] = field(default_factory=dict)
    trainer: str = "nnUNetTrainerC2F"
    lr: float = 3e-4
    coarse: dict[str, Any] = field(default_factory=dict)
    fine: dict[str, Any] = field(default_factory=dict)
    workers: int = 2                   # conversion / preprocessing processes
    da_workers: int = 0                # nnU-Net augmentation processes (0: in the training process)


TRAINERS = ("inplane", "nnunet3d")
# how a fine stage grows its start row's output layer by new labels (loop.remap_head); part of the stage settings of
# the rows that do (label_maps), so a stage grown by an earlier rule trains again
HEAD_GROWTH = "new labels: zero weights, background bias - 4"


@dataclass(frozen=True)
class Row:
    """A benchmark row: which labelled cases train it and with what appearance policy."""

    name: str
    title: str
    trainer: str = "inplane"           # "inplane": the 2D in-plane C2F (this package); "nnunet3d": the 3D nnU-Net
                                       # v2 C2F of training.c2f (the profile's `nnunet3d` settings)
    source: str = "btcv"               # "btcv" (labelled CT), "chaos_target" (upper bound: target labels) or
                                       # "btcv_pet" (FDG-PET-like renders of the BTCV label maps, pet.py)
    appearance: Appearance = Appearance()
    seed: int | None = None            # None: the profile's seed (another seed: another teacher of the same recipe)
    modality: str = "MRI"              # the card's modality; "PET" rows are checked on the real FDG PET scans
    own_coarse: bool = False           # train a coarse stage of its own on its source (else the shared one)
    render_variants: int = 2           # source "btcv_pet": renders per BTCV label map
    synthetic: str | None = None       # "attention" | "plain": also train on the source translated by that CycleGAN
    p_synthetic: float = 0.5           # share of training patches from the synthetic images
    synthetic_p_strong: float | None = None   # Appearance.p_strong of the synthetic patches (None: the row's)
    selftrain: SelfTraining | None = None
    start: str | None = None           # a row whose fine weights start this row's fine stage (None: random init)
    label_maps: str | None = None      # "flare22": also train on images synthesised from those manual label maps
                                       # (labelmaps.py); the network then outputs every organ they hold
    p_label_maps: float = 0.25         # share of training patches from the synthesised images
    label_map_variants: int = 2        # synthetic images per label map
    label_map_ties: float = 0.0        # share of them whose duodenum has its neighbours' intensity (labelmaps.py)
    fine: dict[str, Any] = field(default_factory=dict)   # this row's overrides of the profile's fine recipe
    average: tuple[str, ...] = ()      # rows whose fine weights this row averages uniformly (average.py: a weight
                                       # soup, no training of its own); empty: the row trains

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"row {self.name}: trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if self.trainer == "nnunet3d" and (self.start or self.label_maps or self.source == "btcv_pet"):
            raise ValueError(f"row {self.name}: a 3D nnU-Net row trains from scratch on CT, translated CT and "
                             "pseudo-labelled target scans (no start row, label maps or PET renders)")
        if self.average and (len(set(self.average)) < 2 or self.name in self.average or self.trainer != "inplane"
                             or self.selftrain or self.start or self.synthetic or self.label_maps
                             or self.own_coarse):
            raise ValueError(f"row {self.name}: an average row names two or more other in-plane rows and nothing "
                             "to train from (no selftrain, start, synthetic, label_maps or own coarse stage)")
        if self.synthetic_p_strong is not None and not (self.synthetic and 0 <= self.synthetic_p_strong <= 1):
            raise ValueError(f"row {self.name}: synthetic_p_strong needs a synthetic source and must be in [0, 1], "
                             f"got {self.synthetic_p_strong}")
        if self.label_maps is not None and not (self.label_maps == "flare22" and 0 < self.p_label_maps < 1
                                                and self.label_map_variants >= 1
                                                and 0 <= self.label_map_ties <= 1):
            raise ValueError(f"row {self.name}: label_maps must be 'flare22' (the one set of label maps here), "
                             "p_label_maps in (0, 1), label_map_variants >= 1 and label_map_ties in [0, 1]")


_ROW_DEFAULTS = {"start": None, "fine": {}, "label_maps": None, "p_label_maps": 0.25, "label_map_variants": 2,
                 "label_map_ties": 0.0, "trainer": "inplane", "average": (),
                 "synthetic_p_strong": None}
_SELFTRAIN_DEFAULTS = {"labels": "vote", "target_p_strong": None}


@dataclass(frozen=True)
class Profile:
    name: str
    coarse: StageRecipe
    fine: StageRecipe
    spatial: Spatial = Spatial()
    rows: dict[str, Row] = field(default_factory=dict)
    seed: int = 0
    coarse_row: str = "A"              # the row whose appearance policy trains the one shared coarse stage
    cyclegan: str = "cyclegan/cpu.json"    # CycleGAN options of the synthetic rows (relative to profiles/)
    nnunet3d: NnUNet3D = NnUNet3D()        # the 3D nnU-Net C2F of the rows with trainer "nnunet3d"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, name: str) -> Row:
        """The row `name`; a ValueError naming the profile's rows when it has none of that name."""
        if name not in self.rows:
            raise ValueError(f"profile {self.name} has no row {name!r} (rows: {sorted(self.rows)})")
        return self.rows[name]

    def fine_recipe(self, row: str) -> StageRecipe:
        """The profile's fine recipe with the row's overrides (e.g. a shorter budget when it starts from weights)."""
        from dataclasses import replace

        return replace(self.fine, **self.rows[row].fine)

    def stage_settings(self, row: str, stage: str) -> dict[str, Any]:
        """Everything a trained stage depends on (its "done" fingerprint): the stage recipe, the spatial policy,
        the row that trains it (the profile's `coarse_row` for the shared coarse stage) and the seed. Titles, thread
        counts and how often the curve and checkpoints are written are left out: they change no weight."""
        own = stage == "fine" or self.rows[row].own_coarse
        r = asdict(self.rows[row if own else self.coarse_row])
        r.pop("title")
        for key, default in _ROW_DEFAULTS.items():   # recorded only when set (older stages lack them)
            if r[key] == default:
                r.pop(key)
        if r["appearance"]["p_strong"] == 1.0:   # likewise
            r["appearance"].pop("p_strong")
        for key, default in _SELFTRAIN_DEFAULTS.items():   # likewise
            if r.get("selftrain") and r["selftrain"][key] == default:
                r["selftrain"].pop(key)
        recipe = asdict(self.coarse if stage == "coarse" else self.fine_recipe(row))
        for k in ("threads", "eval_every_s", "checkpoint_every_s"):
            recipe.pop(k)
        if recipe["swa_from"] is None:   # recorded only when set (older stages lack it)
            recipe.pop("swa_from")
        out = {"stage": stage, "recipe": recipe, "spatial": asdict(self.spatial), "row": r, "seed": self.seed}
        if stage == "fine" and r.get("label_maps"):   # the row grows its start row's head by new labels
            out["head_growth"] = HEAD_GROWTH
        return out


def _build(cls, d: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    out = {}
    for k, v in d.items():
        out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
    return cls(**out)


def as_profile(profile: "str | Profile") -> Profile:
    """`profile` itself, or the profile of that name or path (a run builds its step graph, and the settings each
    step records, from the one object it loaded; the steps' processes read the file again)."""
    return profile if isinstance(profile, Profile) else load_profile(profile)


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (training/inplane/profiles/<name>.json) or path, `extends` resolved."""
    path = find_profile(name_or_path, PROFILE_DIR, PROFILE_DIR)
    d = read_profile(path, PROFILE_DIR)
    where = str(path)
    try:
        rows = {}
        for key, r in d.get("rows", {}).items():
            r = dict(r)
            r["appearance"] = _build(Appearance, r.get("appearance", {}), f"{where} rows.{key}.appearance")
            if r.get("selftrain") is not None:
                r["selftrain"] = _build(SelfTraining, r["selftrain"], f"{where} rows.{key}.selftrain")
            unknown = sorted(set(r.get("fine", {})) - {f.name for f in fields(StageRecipe)})
            if unknown:
                raise ValueError(f"{where} rows.{key}.fine: unknown keys {unknown}")
            rows[key] = _build(Row, {"name": key, **r}, f"{where} rows.{key}")
        return Profile(name=d.get("name", path.stem),
                       coarse=_build(StageRecipe, d["coarse"], f"{where} coarse"),
                       fine=_build(StageRecipe, d["fine"], f"{where} fine"),
                       spatial=_build(Spatial, d.get("spatial", {}), f"{where} spatial"),
                       rows=rows, seed=int(d.get("seed", 0)), coarse_row=str(d.get("coarse_row", "A")),
                       cyclegan=str(d.get("cyclegan", Profile.cyclegan)),
                       nnunet3d=_build(NnUNet3D, d.get("nnunet3d", {}), f"{where} nnunet3d"))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a valid profile ({exc})") from None
