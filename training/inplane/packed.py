"""Every row of a profile from a pack, in one run: the path of the lent GPU machine (no data, no SimpleITK).

The CPU path (`steps.py`) reads the NIfTI scans and writes NIfTI files between its steps: translated CT, the
teachers' predictions, pseudo-labels, PET renders. Here the same steps work on the pack's volumes in memory and
write what later stages train on as packs of their own (the pack format, `pack.py`), all on the pack's grid:

    WORK/cyclegan/<kind>/synthetic.npz       every BTCV CT translated by the row's CycleGAN (training.cyclegan,
                                             fed the scans' own intensities, `Volume.raw`), with its labels
    WORK/rows/<row>/pseudo/pseudo.npz        the kept target scans with their training labels (teachers exported
                                             to WORK/models/r<t>, segmented by the engine's own pipeline,
                                             `Segmenter.segment_array`; the dual-stage filter of training.selftrain;
                                             Table 4 and the per-scan record in pseudo/filtered/ as on the CPU path)
    WORK/rows/<row>/render/pet.npz           the PET row's renders of the BTCV label maps (training.render)

`run_packed` runs the whole graph on the shared runner, independent steps at once (`jobs`; each training is its own
process, so several share the GPU). It trains; the real scans are scored afterwards where the data is
(`python -m training.inplane score-trained`, the engine on the CPU as for every row). The differences from the
CPU path are the pack's: every volume was resampled to the pack's grid first (the translator, the teachers and the
renderer see 2 mm slices instead of the scan's own pixels).
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from training.runner import RunResult, Step, run_steps

from . import protocol
from .data import IGNORE, MixedBank, SliceBank, Volume, label_map, prepare_volume
from .pack import load_packed, packed_set, read_meta, write_pack
from .recipe import Profile, as_profile

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)   # packed volumes are on the engine's canonical grid
PARTS = ("translator", "pseudo", "render")


def synthetic_pack(work: Path, kind: str) -> Path:
    return work / "cyclegan" / kind / "synthetic.npz"


def pseudo_pack(work: Path, row: str) -> Path:
    return work / "rows" / row / "pseudo" / "pseudo.npz"


def render_pack(work: Path, row: str) -> Path:
    return work / "rows" / row / "render" / "pet.npz"


def _grid(pack: Path):
    return tuple(read_meta(pack)["spacing_mm"])


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{path} missing: {what} (python -m training.inplane prepare ... --packed)")
    return path


def packed_bank(work: Path, prof: Profile, row: str, stage: str, spacing_mm, pack: Path, curve_on_test: bool):
    """The training bank and the curve's test volumes of `stage` of `row` (the row that trains it: the
    profile's `coarse_row` for the shared coarse stage) from the pack and the packs made from it."""
    r = prof.rows[row]
    if r.source == "btcv_pet":
        path = _need(render_pack(work, row), f"row {row}'s PET renders")
        bank = SliceBank(load_packed(path, spacing_mm, packed_set(path, "all")))
    else:
        bank = SliceBank(load_packed(pack, spacing_mm, packed_set(pack, r.source)))
    if stage == "fine" and r.synthetic:
        path = _need(synthetic_pack(work, r.synthetic), f"the {r.synthetic} CycleGAN's translated CT")
        bank = MixedBank(bank, SliceBank(load_packed(path, spacing_mm, packed_set(path, "all"))), r.p_synthetic)
    if stage == "fine" and r.selftrain:
        path = _need(pseudo_pack(work, row), f"row {row}'s pseudo-labelled target scans")
        bank = MixedBank(bank, SliceBank(load_packed(path, spacing_mm, packed_set(path, "all"))),
                         r.selftrain.p_target)
    evals = load_packed(pack, spacing_mm, packed_set(pack, "test")) if curve_on_test else []
    return bank, evals


def prepare_translator(work: Path, prof: Profile, kind: str, pack: Path, device: str = "cpu",
                       threads: int | None = None) -> Path:
    """Train (or resume) the `kind` translator on the pack's BTCV CT and target scans and translate every BTCV CT;
    returns WORK/cyclegan/<kind>/synthetic.npz (written last: it marks the step done)."""
    import torch

    from training.cyclegan.data import ArrayCase
    from training.cyclegan.options import CycleGANOptions
    from training.cyclegan.train import train_cases
    from training.cyclegan.translate import load_checkpoint, translate_case

    from .synthetic import translator_options

    run, dest = work / "cyclegan" / kind, synthetic_pack(work, kind)
    opts = translator_options(prof, kind)
    recorded = json.loads(json.dumps(opts.to_dict()))     # as the pack's metadata holds it
    if dest.is_file() and read_meta(dest).get("options") == recorded:
        return dest
    if (run / "options.json").is_file() and CycleGANOptions.load(run / "options.json").differences(opts):
        shutil.rmtree(run)      # trained with other options: train again (the same options resume)
    grid = _grid(pack)

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
    """The teachers' predictions of the pack's target scans (their rows exported to WORK/models/r<t>, the engine
    on arrays), the dual-stage filter, the kept scans with their training labels; returns the pseudo pack."""
    from inference.pipeline import EngineOptions, Segmenter
    from training.selftrain.filtering import DEFAULT_DICE_THRESHOLD, rank_cases, table4_row, vote, write_report
    from training.selftrain.labels import organ_set
    from training.selftrain.stats import CTStats

    from .layout import machine
    from .export import export_row
    from .pseudo import training_label

    st = prof.rows[row].selftrain
    dest = pseudo_pack(work, row)
    if dest.parent.exists():
        shutil.rmtree(dest.parent)      # made again whole: the teachers may have changed
    meta = read_meta(pack)
    if "btcv_stats" not in meta:
        raise ValueError(f"{pack}: no relative-volume statistics (a pack of a profile without self-training rows)")
    preds: dict[str, list] = {}
    grid = _grid(pack)
    targets = load_packed(pack, grid, packed_set(pack, "chaos_target"))
    for t in st.teachers:
        model = work / "models" / f"r{t}"
        if model.exists():
            shutil.rmtree(model)
        export_row(work, prof, t, model, name=f"r{t}", machine=machine(), onnx=False)
        seg = Segmenter(EngineOptions(weights_dir=model.parent, model=model.name, backend="torch", device=device,
                                      threads=threads, tta=True))
        for v in targets:
            preds.setdefault(v.name, []).append(seg.segment_array(v.raw(), v.spacing_mm, "MRI"))
    set_stats = CTStats.from_dict(meta["btcv_stats"]).for_set(st.organ_set)
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
        consensus = vote(preds[res.case], organ_set(st.organ_set), IGNORE)
        label = training_label(consensus, preds[res.case][0], st.organ_set)
        volumes.append(prepare_volume(v.name, v.raw(), v.spacing_mm, label, v.spacing_mm, protocol.BTCV_LABELS))
    return write_pack(dest, volumes, {"all": [v.name for v in volumes]},
                      {"teachers": list(st.teachers), "kept": [r.case for r in selected]}, compress=False)


def _render(name: str, labels, body, spacing, seed: int):
    """One PET render of a packed BTCV label map as a volume on the pack's grid (a worker process's task)."""
    from training.render import PetRenderConfig
    from training.render.pet import painter
    from training.render.variants import render_canonical

    from .pet import PAD_MM

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
    settings = _render_settings(prof, row)
    if dest.is_file() and read_meta(dest).get("settings") == settings:
        return dest
    workers = workers or max(1, min(8, (os.cpu_count() or 2) // 2))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = []
        for v in load_packed(pack, _grid(pack), packed_set(pack, "btcv")):
            labels = label_map(v)
            body = body_mask_from_image(v.raw(), v.spacing_mm, labels)
            futures += [pool.submit(_render, f"{v.name}_pet{k}", labels, body, v.spacing_mm, prof.seed)
                        for k in range(r.render_variants)]
        volumes = [f.result() for f in futures]
    return write_pack(dest, volumes, {"all": [v.name for v in volumes]}, {"settings": settings}, compress=False)


def _render_settings(prof: Profile, row: str) -> dict:
    from .pet import PAD_MM

    return {"kind": "pet", "variants": prof.rows[row].render_variants, "seed": prof.seed, "pad_mm": list(PAD_MM)}


def prepare(work: Path, profile: str | Profile, row: str, part: str, pack: Path, device: str = "cpu",
            threads: int | None = None) -> Path:
    """One preparing step of `row` from the pack: its translator ("translator"), its pseudo-labels ("pseudo") or
    its PET renders ("render")."""
    prof = as_profile(profile)
    if row not in prof.rows:
        raise ValueError(f"profile {prof.name} has no row {row!r} (rows: {sorted(prof.rows)})")
    r = prof.rows[row]
    if part == "translator" and r.synthetic:
        return prepare_translator(work, prof, r.synthetic, pack, device, threads)
    if part == "pseudo" and r.selftrain:
        return prepare_pseudo(work, prof, row, pack, device, threads)
    if part == "render" and r.source == "btcv_pet":
        return prepare_render(work, prof, row, pack)
    raise ValueError(f"row {row} has no {part!r} step (parts: {', '.join(PARTS)})")


def packed_steps(work: Path, prof: Profile, profile_arg: str, pack: Path, rows: list[str], device: str,
                 threads: int | None = None) -> list[Step]:
    """The step graph of `rows` and of every row they learn from, each step a process of this package."""
    steps: dict[str, Step] = {}
    base = [sys.executable, "-m", "training.inplane"]
    common = ["--work", str(work), "--profile", profile_arg, "--packed", str(pack), "--device", device]
    if threads:
        common += ["--threads", str(threads)]

    def cmd(verb: str, row: str, *extra: str) -> list[str]:
        return base + [verb, *common, "--row", row, *extra]

    def coarse_of(rw: str) -> str:
        return f"r{rw}.coarse" if prof.rows[rw].own_coarse else "coarse"

    def add(rw: str) -> None:
        if f"r{rw}.fine" in steps:
            return
        if rw not in prof.rows:
            raise ValueError(f"profile {prof.name} has no row {rw!r} (rows: {sorted(prof.rows)})")
        r, deps = prof.rows[rw], []
        if r.source == "btcv_pet":
            steps[f"r{rw}.render"] = Step(f"r{rw}.render", argv=cmd("prepare", rw, "--part", "render"),
                                          settings=_render_settings(prof, rw))
            deps.append(f"r{rw}.render")
        name = coarse_of(rw)
        if name not in steps:
            owner = rw if r.own_coarse else prof.coarse_row
            steps[name] = Step(name, tuple(deps), argv=cmd("train", owner, "--stage", "coarse"), gpu=True,
                               settings=prof.stage_settings(owner, "coarse"))
        if r.synthetic:
            from .synthetic import translator_options

            name = f"cyclegan.{r.synthetic}"
            steps.setdefault(name, Step(name, argv=cmd("prepare", rw, "--part", "translator"), gpu=True,
                                        settings=translator_options(prof, r.synthetic).to_dict()))
            deps.append(name)
        if r.selftrain:
            for t in r.selftrain.teachers:
                add(t)
            teach = tuple(d for t in r.selftrain.teachers for d in (f"r{t}.fine", coarse_of(t)))
            steps[f"r{rw}.pseudo"] = Step(f"r{rw}.pseudo", tuple(dict.fromkeys(teach)),
                                          argv=cmd("prepare", rw, "--part", "pseudo"), gpu=True,
                                          settings={"selftrain": asdict(r.selftrain)})
            deps.append(f"r{rw}.pseudo")
        if r.start:
            add(r.start)
            deps.append(f"r{r.start}.fine")
        steps[f"r{rw}.fine"] = Step(f"r{rw}.fine", tuple(deps), argv=cmd("train", rw, "--stage", "fine"), gpu=True,
                                    settings=prof.stage_settings(rw, "fine"))

    for row in rows:
        add(row)
    return list(steps.values())


def run_packed(work: Path, profile: str, pack: Path, rows: list[str] | None = None, device: str = "cpu",
               jobs: int = 1, threads: int | None = None) -> RunResult:
    """Train every stage of `rows` (default: all the profile's rows a pack can train: the in-plane rows that do
    not synthesise images from label maps, which the pack does not hold) from `pack`, `jobs` steps at once."""
    prof = as_profile(profile)
    read_meta(pack)
    rows = rows or [name for name, r in prof.rows.items() if r.label_maps is None and r.trainer == "inplane"]
    other = [name for name in rows if name in prof.rows
             and (prof.rows[name].label_maps is not None or prof.rows[name].trainer != "inplane")]
    if other:
        raise ValueError(f"rows {other} train on label maps or the 3D nnU-Net C2F, which need the files, not a "
                         "pack: run them with `run --row`")
    steps = packed_steps(work, prof, profile, pack, rows, device, threads)
    return run_steps(work, steps, jobs=jobs, progress=False, desc="packed rows")
