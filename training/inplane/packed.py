"""The benchmark's one data path: every volume a stage trains on comes from the pack (`pack.py`: the real scans
prepared once on the profile's finest grid) or from a pack made from it by a preparing step, on the same grid:

    WORK/cyclegan/<kind>/synthetic.npz       every BTCV CT translated by the row's CycleGAN (training.cyclegan,
                                             fed the scans' own intensities, `Volume.raw`), with its labels
    WORK/rows/<row>/pseudo/pseudo.npz        the kept target scans with their training labels (teachers exported
                                             to WORK/teachers/r<t>, segmented by the engine's own pipeline,
                                             `Segmenter.segment_array`; the dual-stage filter of training.selftrain;
                                             Table 4 and the per-scan record in pseudo/filtered/)
    WORK/rows/<row>/render/pet.npz           the PET row's renders of the BTCV label maps (training.render)

Each is made again when what it is made with changes (its recorded options, settings or teachers), never reused
stale. None of it needs SimpleITK, so the lent GPU machine runs it from an uploaded pack; the graph of steps is
`steps.py`. The translator, the teachers and the renderer see the pack's 2 mm slices, not the scan's own pixels.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import protocol
from .data import IGNORE, MixedBank, SliceBank, Volume, label_map, prepare_volume, relabel
from .pack import load_packed, pack_grid, packed_set, read_meta, stats_key, write_pack
from .recipe import LABEL_RULES, PROFILE_DIR, Profile, as_profile

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)   # packed volumes are on the engine's canonical grid
PAD_MM = (100.0, 250.0)   # the PET renders' body extension below and above the labels (training.render.variants)
FLARE_LABELS = (0,) + protocol.DATASET_ORGANS["flare_mri"]   # a pseudo pack keeps every organ
PARTS = ("translator", "pseudo", "render")
KINDS = ("attention", "plain")   # Organ Attention CycleGAN; the same without attention discriminator and seg loss


def translator_options(prof: Profile, kind: str):
    """The `kind` translator's options: the profile's `cyclegan` file (one translator per kind serves every row
    that names it; it trains with the fine recipe's torch threads and resumes from its last epoch)."""
    from training.cyclegan.options import CycleGANOptions

    if kind not in KINDS:
        raise ValueError(f"unknown CycleGAN kind {kind!r} ({', '.join(KINDS)})")
    path = Path(prof.cyclegan)
    opts = CycleGANOptions.load(path if path.is_absolute() else PROFILE_DIR / path)
    return opts.replace(attention=kind == "attention")


def synthetic_pack(work: Path, kind: str) -> Path:
    return work / "cyclegan" / kind / "synthetic.npz"


def pseudo_pack(work: Path, row: str) -> Path:
    return work / "rows" / row / "pseudo" / "pseudo.npz"


def render_pack(work: Path, row: str) -> Path:
    return work / "rows" / row / "render" / "pet.npz"


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{path} missing: {what} (python -m training.inplane prepare ... --packed)")
    return path


def packed_bank(work: Path, prof: Profile, row: str, stage: str, spacing_mm, pack: Path, label_ids,
                curve_on_test: bool):
    """The training bank and the curve's test volumes of `stage` of `row` (the row that trains it: the
    profile's `coarse_row` for the shared coarse stage) from the pack and the packs made from it, labelled as
    channels of `label_ids` (a row that also trains on label maps: every source's background is PARTIAL)."""
    r = prof.rows[row]
    fine = stage == "fine"
    partial = fine and r.label_maps is not None

    def bank(path: Path, set_name: str, p_strong: float | None = None) -> SliceBank:
        """`p_strong` given: the bank's own appearance policy (the row's with that share randomised); None: the
        stage's."""
        own = None if p_strong is None else replace(r.appearance, p_strong=p_strong)
        return SliceBank([relabel(v, label_ids, partial)
                          for v in load_packed(path, spacing_mm, packed_set(path, set_name))], own)

    if r.source == "btcv_pet":
        out = bank(_need(render_pack(work, row), f"row {row}'s PET renders"), "all")
    else:
        out = bank(pack, r.source)
    if fine and r.synthetic:
        out = MixedBank(out, bank(_need(synthetic_pack(work, r.synthetic), f"the {r.synthetic} CycleGAN's "
                                        "translated CT"), "all", r.synthetic_p_strong), r.p_synthetic)
    if fine and r.selftrain:
        out = MixedBank(out, bank(_need(pseudo_pack(work, row), f"row {row}'s pseudo-labelled target scans"), "all",
                                  r.selftrain.target_p_strong), r.selftrain.p_target)
    if partial:
        from .labelmaps import synth_volumes

        maps = load_packed(pack, spacing_mm, packed_set(pack, "flare22"))
        out = MixedBank(out, SliceBank(synth_volumes(maps, spacing_mm, label_ids, r.label_map_variants, prof.seed,
                                                     r.label_map_ties)),
                        r.p_label_maps)
    evals = load_packed(pack, spacing_mm, packed_set(pack, "test")) if curve_on_test else []
    return out, evals


def prepare_translator(work: Path, prof: Profile, kind: str, pack: Path, device: str = "cpu",
                       threads: int | None = None) -> Path:
    """Train (or resume) the `kind` translator on the pack's BTCV CT and target scans and translate every BTCV CT;
    returns WORK/cyclegan/<kind>/synthetic.npz (written last: it marks the step done)."""
    import torch

    from training.cyclegan.data import ArrayCase
    from training.cyclegan.options import CycleGANOptions
    from training.cyclegan.train import train_cases
    from training.cyclegan.translate import load_checkpoint, translate_case

    run, dest = work / "cyclegan" / kind, synthetic_pack(work, kind)
    opts = translator_options(prof, kind)
    recorded = json.loads(json.dumps(opts.to_dict()))     # as the pack's metadata holds it
    if dest.is_file() and read_meta(dest).get("options") == recorded:
        return dest
    if (run / "options.json").is_file() and CycleGANOptions.load(run / "options.json").differences(opts):
        shutil.rmtree(run)      # trained with other options: train again (the same options resume)
    grid = pack_grid(pack)

    def cases(set_name: str, labelled: bool) -> list[tuple[Volume, ArrayCase]]:
        return [(v, ArrayCase(v.name, v.raw(), tuple(reversed(v.spacing_mm)), IDENTITY,
                              label_map(v) if labelled else None))
                for v in load_packed(pack, grid, packed_set(pack, set_name))]

    ct = cases("btcv", True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or prof.fine.threads)
    try:
        if not (run / "quality.json").is_file():
            train_cases([c for _, c in ct], [c for _, c in cases("chaos_target", False)], run, opts, device=device,
                        progress=False)
        model, ckpt = load_checkpoint(run / "checkpoints" / "latest.pt", device)
        volumes = [prepare_volume(v.name, translate_case(model, ckpt, c), v.spacing_mm, c.label, v.spacing_mm,
                                  v.label_ids) for v, c in ct]
    finally:
        torch.set_num_threads(before)
    return write_pack(dest, volumes, {"all": [v.name for v in volumes]}, {"translator": kind,
                                                                          "options": recorded}, compress=False)


def prepare_pseudo(work: Path, prof: Profile, row: str, pack: Path, device: str = "cpu",
                   threads: int | None = None) -> Path:
    """The teachers' predictions of the pack's target scans (the engine on arrays; a teacher trained here is
    exported, torch only, to WORK/teachers/r<t>, leaving WORK/models/r<t> (export and ship: ONNX) as it is), the
    dual-stage filter, the kept scans with their training labels; returns the pseudo pack."""
    from inference.pipeline import EngineOptions, Segmenter
    from training.selftrain.filtering import DEFAULT_DICE_THRESHOLD, rank_cases, table4_row, write_report
    from training.selftrain.stats import CTStats

    from .layout import machine, stage_dirs, teacher_dir
    from .export import export_row

    st = prof.rows[row].selftrain
    dest = pseudo_pack(work, row)
    if dest.parent.exists():
        shutil.rmtree(dest.parent)      # made again whole: the teachers may have changed
    stats = read_meta(pack).get("stats", {}).get(stats_key(st.organ_set))
    if stats is None:
        raise ValueError(f"{pack}: no relative-volume statistics for organ set {st.organ_set!r} (a pack of a "
                         "profile without such a self-training row)")
    preds: dict[str, list] = {}
    grid = pack_grid(pack)
    targets = load_packed(pack, grid, packed_set(pack, "chaos_target"))
    for t in st.teachers:
        trained = (stage_dirs(work, t)["fine"] / "summary.json").is_file()
        model = teacher_dir(work, t, trained)
        if trained:                              # trained here: exported from its stages
            shutil.rmtree(model, ignore_errors=True)
            export_row(work, prof, t, model, name=f"r{t}", machine=machine(), onnx=False)
        elif not (model / "model.json").is_file():   # else a shipped model put there by `seed --model` (ONNX)
            raise ValueError(f"row {row}'s teacher {t}: no trained stages, no model in {model} (seed --model {t}=DIR)")
        seg = Segmenter(EngineOptions(weights_dir=model.parent, model=model.name, device=device, threads=threads))
        for v in targets:
            preds.setdefault(v.name, []).append(seg.segment_array(v.raw(), v.spacing_mm, "MRI"))
    set_stats = CTStats.from_dict(stats).for_set(st.organ_set)
    threshold = DEFAULT_DICE_THRESHOLD[st.organ_set] if st.dice_threshold is None else st.dice_threshold
    results, selected = rank_cases(list(preds), lambda n: preds[n][:2], set_stats, st.n_sigma, 1, threshold,
                                   st.top_k)
    write_report(dest.parent / "filtered", st.organ_set, table4_row(st.organ_set, results, threshold, st.top_k),
                 results)
    if not selected:
        raise ValueError(f"row {row}: the filter kept no target scan ({dest.parent / 'filtered' / 'table4.md'})")
    by_name = {v.name: v for v in targets}
    volumes = []
    for res in selected:
        v = by_name[res.case]
        label = kept_label(preds[res.case], st.organ_set, st.labels)
        volumes.append(prepare_volume(v.name, v.raw(), v.spacing_mm, label, v.spacing_mm, FLARE_LABELS))
    return write_pack(dest, volumes, {"all": [v.name for v in volumes]},
                      {"teachers": list(st.teachers), "kept": [r.case for r in selected]}, compress=False)


def kept_label(preds: list[np.ndarray], set_name: str, rule: str = "vote") -> np.ndarray:
    """The training label of a kept scan from its teachers' maps (best first) under `rule`
    (recipe.SelfTraining.labels): "vote", their majority (IGNORE where it has none); "best", the first map alone.
    Organs outside the filter's set `set_name` become IGNORE either way (`training_label`)."""
    from training.selftrain.filtering import vote
    from training.selftrain.labels import organ_set

    if rule not in LABEL_RULES:
        raise ValueError(f"unknown label rule {rule!r} (known: {', '.join(LABEL_RULES)})")
    voters = preds[:1] if rule == "best" else preds
    return training_label(vote(voters, organ_set(set_name), IGNORE), preds[0], set_name)


def training_label(consensus: np.ndarray, best: np.ndarray, set_name: str) -> np.ndarray:
    """The training label of a kept scan: the teachers' consensus, with IGNORE wherever the best teacher gives an
    organ outside the filter's organ set `set_name` (such organs were not checked, so they are neither trusted as
    organ nor as background)."""
    from training.selftrain.labels import organ_set

    checked = np.zeros(256, dtype=bool)
    checked[[0, IGNORE, *organ_set(set_name)]] = True
    out = consensus.copy()
    out[~checked[best]] = IGNORE
    return out


def _render(name: str, labels, body, spacing, seed: int):
    """One PET render of a packed BTCV label map as a volume on the pack's grid (a worker process's task)."""
    from training.render import PetRenderConfig
    from training.render.pet import painter
    from training.render.variants import render_canonical

    image, lab, _, _ = render_canonical(labels, body, spacing, name, seed, PAD_MM,
                                        painter(PetRenderConfig(pad_mm=PAD_MM)))
    return prepare_volume(name, image, spacing, lab, spacing, protocol.BTCV_LABELS)


def prepare_render(work: Path, prof: Profile, row: str, pack: Path, workers: int | None = None) -> Path:
    """The PET row's renders of the pack's BTCV label maps (`render_variants` each, seeded as on the CPU path:
    training.render's (seed, <case>_pet<k>)), `workers` at once (default: half the CPU cores, at most 8);
    returns the render pack."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from training.render import body_mask_from_image

    r, dest = prof.rows[row], render_pack(work, row)
    settings = render_settings(prof, row)
    if dest.is_file() and read_meta(dest).get("settings") == settings:
        return dest
    workers = workers or max(1, min(8, (os.cpu_count() or 2) // 2))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = []
        for v in load_packed(pack, pack_grid(pack), packed_set(pack, "btcv")):
            labels = label_map(v)
            body = body_mask_from_image(v.raw(), v.spacing_mm, labels)
            futures += [pool.submit(_render, f"{v.name}_pet{k}", labels, body, v.spacing_mm, prof.seed)
                        for k in range(r.render_variants)]
        volumes = [f.result() for f in futures]
    return write_pack(dest, volumes, {"all": [v.name for v in volumes]}, {"settings": settings}, compress=False)


def render_settings(prof: Profile, row: str) -> dict:
    return {"kind": "pet", "variants": prof.rows[row].render_variants, "seed": prof.seed, "pad_mm": list(PAD_MM)}


def prepare(work: Path, profile: str | Profile, row: str, part: str, pack: Path, device: str = "cpu",
            threads: int | None = None) -> Path:
    """One preparing step of `row` from the pack: its translator ("translator"), its pseudo-labels ("pseudo") or
    its PET renders ("render")."""
    prof = as_profile(profile)
    r = prof.row(row)
    if part == "translator" and r.synthetic:
        return prepare_translator(work, prof, r.synthetic, pack, device, threads)
    if part == "pseudo" and r.selftrain:
        return prepare_pseudo(work, prof, row, pack, device, threads)
    if part == "render" and r.source == "btcv_pet":
        return prepare_render(work, prof, row, pack)
    raise ValueError(f"row {row} has no {part!r} step (parts: {', '.join(PARTS)})")
