"""Train one stage of one benchmark row (the in-plane 2D C2F): the training bank from the pack (packed.py), the
start weights, and the one resume rule (training.resume: the recorded settings decide)."""
from __future__ import annotations

from pathlib import Path

from . import protocol
from .layout import row_label_ids, stage_dirs, work_pack
from .recipe import Profile, as_profile


def train_one(work: Path, profile: str | Profile, row: str, stage: str, data: Path = protocol.REAL_DATA,
              device: str = "cpu", threads: int | None = None, curve_on_test: bool = True,
              packed: Path | None = None) -> Path:
    """Train (or resume, or find trained) `stage` of `row`: the coarse stage is shared by the rows and trained
    with the appearance policy of the profile's `coarse_row`. Volumes come from the pack `packed` (default
    WORK/pack.npz, which `run` makes) and the packs its preparing steps made; an average row's fine stage is the
    mean of its rows' (average.py). Returns the stage folder."""
    from dataclasses import replace

    from .loop import train_stage

    prof = as_profile(profile)
    own = prof.row(row).own_coarse
    out = stage_dirs(work, row, own)[stage]
    if not _still_to_train(out, prof.stage_settings(row, stage)):
        return out
    if stage == "fine" and prof.rows[row].average:     # a weight soup: the mean of its rows' trained fine stages
        from .average import average_fine

        return average_fine(work, prof.rows[row].average, out)
    recipe = prof.coarse if stage == "coarse" else prof.fine_recipe(row)
    if threads:
        recipe = replace(recipe, threads=threads)
    trainer = prof.coarse_row if stage == "coarse" and not own else row
    r = prof.rows[trainer]
    label_ids = row_label_ids(r, data)
    curve_on_test = curve_on_test and r.modality == "MRI"    # the test scans are MRI (PET: no labels here)
    start = r.start if stage == "fine" else None
    init = stage_dirs(work, start)["fine"] / "final.pt" if start else None
    init_ids = row_label_ids(prof.rows[start], data) if start else None
    if init is not None and not init.is_file():
        raise ValueError(f"row {row} starts from row {start}'s fine stage: train it first ({init} missing)")
    if r.trainer != "inplane":
        raise ValueError(f"row {trainer} trains the 3D nnU-Net C2F: run it with `run --row {trainer}` (steps.py)")
    from .packed import packed_bank

    packed = work_pack(work) if packed is None else packed
    if not packed.is_file():
        raise FileNotFoundError(f"{packed}: no pack (python -m training.inplane pack --out {packed}, or `run`)")
    bank, evals = packed_bank(work, prof, trainer, stage, recipe.spacing_mm, packed, label_ids, curve_on_test)
    annotated = set(row_label_ids(replace(r, label_maps=None), data))
    train_stage(out, bank, recipe, prof.spatial, r.appearance, label_ids, evals,
                protocol.SCORED_ORGANS if evals else (), seed=prof.seed if r.seed is None else r.seed, device=device,
                init=init, init_label_ids=init_ids,
                partial_channels=tuple(ch for ch, lab in enumerate(label_ids) if lab not in annotated))
    return out


def _still_to_train(out: Path, settings: dict) -> bool:
    """False when `out` holds the finished stage of these settings (training.resume: a stage folder of other
    settings is removed and trains again from the start; an unfinished one of the same settings resumes)."""
    from training.resume import claim

    return claim(out, settings, "final.pt")
