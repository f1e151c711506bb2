"""Train one stage of one benchmark row (the in-plane 2D C2F): the training bank from the NIfTI files (or a
pack), the start weights, and the one resume rule (training.resume: the recorded settings decide)."""
from __future__ import annotations

from pathlib import Path

from . import protocol
from .layout import row_label_ids, stage_dirs
from .recipe import Profile, as_profile


def train_one(work: Path, profile: str | Profile, row: str, stage: str, data: Path = protocol.REAL_DATA,
              device: str = "cpu", threads: int | None = None, curve_on_test: bool = True,
              packed: Path | None = None) -> Path:
    """Train (or resume, or find trained) `stage` of `row`: the coarse stage is shared by the rows and trained
    with the appearance policy of the profile's `coarse_row`. Volumes come from the NIfTI files under `data`, or
    from a pack (training.inplane.pack) when `packed` is given. Returns the stage folder."""
    from dataclasses import replace

    from .loop import train_stage

    prof = as_profile(profile)
    if row not in prof.rows:
        raise ValueError(f"profile {prof.name} has no row {row!r} (rows: {sorted(prof.rows)})")
    own = prof.rows[row].own_coarse
    out = stage_dirs(work, row, own)[stage]
    if not _still_to_train(out, prof.stage_settings(row, stage)):
        return out
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
    if packed is not None and r.label_maps is not None:
        raise ValueError(f"row {trainer} trains on label maps, which a pack does not hold: train it from the files")
    if packed is not None:
        from .packed import packed_bank

        bank, evals = packed_bank(work, prof, trainer, stage, recipe.spacing_mm, packed, curve_on_test)
    else:
        bank, evals = _nifti_bank(work, prof, trainer, stage, recipe.spacing_mm, label_ids, data, device, threads,
                                  curve_on_test)
    annotated = set(row_label_ids(replace(r, label_maps=None), data))
    train_stage(out, bank, recipe, prof.spatial, r.appearance, label_ids, evals,
                protocol.SCORED_ORGANS if evals else (), seed=prof.seed if r.seed is None else r.seed, device=device,
                init=init, init_label_ids=init_ids,
                partial_channels=tuple(ch for ch, lab in enumerate(label_ids) if lab not in annotated))
    return out


def _nifti_bank(work: Path, prof: Profile, row: str, stage: str, spacing_mm, label_ids: tuple[int, ...], data: Path,
                device: str, threads: int | None, curve_on_test: bool):
    """The training bank and the curve's test volumes of `stage` of `row` (the row that trains it) from the NIfTI
    scans under `data` and the files the row's earlier steps wrote (translated CT, pseudo-labels, renders)."""
    from .data import MixedBank, SliceBank, load_volumes

    r = prof.rows[row]
    if r.source == "btcv_pet":
        from .pet import pet_cases

        cases = pet_cases(work, data, r.render_variants, prof.seed)
    else:
        cases = protocol.source_cases(r.source, data)[0]

    def volumes(cases_, label_ids_, partial=r.label_maps is not None and stage == "fine"):
        missing = [str(c.image) for c in cases_ if not c.image.is_file() or not c.label.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} case(s) missing, e.g. {missing[0]}")
        return load_volumes(cases_, spacing_mm, label_ids_, partial=partial)

    bank = SliceBank(volumes(cases, label_ids))
    if r.synthetic and stage == "fine":
        from .synthetic import synthetic_cases, synthetic_folder

        synth = synthetic_folder(work, prof, r.synthetic, data, device, threads)
        bank = MixedBank(bank, SliceBank(volumes(synthetic_cases(synth), label_ids)), r.p_synthetic)
    if r.selftrain is not None and stage == "fine":
        from .pseudo import pseudo_cases, pseudo_label

        pseudo_label(work, prof, row, data, device, threads)
        targets = pseudo_cases(work, prof, row)
        if not targets:
            raise ValueError(f"row {row}: the filter kept no target scan "
                             f"({work / 'rows' / row / 'pseudo' / 'filtered' / 'table4.md'})")
        bank = MixedBank(bank, SliceBank(volumes(targets, label_ids)), r.selftrain.p_target)
    if r.label_maps is not None and stage == "fine":
        from .labelmaps import synth_volumes

        maps = synth_volumes(data, r.label_maps, spacing_mm, label_ids, r.label_map_variants, prof.seed)
        bank = MixedBank(bank, SliceBank(maps), r.p_label_maps)
    evals = volumes(protocol.test_cases(data), protocol.CHAOS_LABELS, False) if curve_on_test else []
    return bank, evals


def _still_to_train(out: Path, settings: dict) -> bool:
    """False when `out` holds the finished stage of these settings (training.resume: a stage folder of other
    settings is removed and trains again from the start; an unfinished one of the same settings resumes)."""
    from training.resume import claim

    return claim(out, settings, "final.pt")
