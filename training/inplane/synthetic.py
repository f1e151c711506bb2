"""Synthetic target images for a CycleGAN row: the CT -> MRI translator (training.cyclegan) trained on the labelled
source and the unlabelled target scans, then every source CT translated, its labels kept.

    WORK/cyclegan/<kind>/          the translator's run folder (kind "attention": Organ Attention CycleGAN;
                                   "plain": the same without attention discriminator and segmentation loss):
                                   checkpoints, loss_log.jsonl, quality_curve.csv, quality.json (marks it trained),
                                   grids/
    WORK/cyclegan/<kind>/synthetic/images/<case>_0000.nii.gz, labels/<case>.nii.gz, translate.json (written last)

One translator per kind serves every row that names it. Its options are the profile's `cyclegan` file; the
translator trains with the fine recipe's torch threads and resumes from its last epoch.
"""
from __future__ import annotations

from pathlib import Path

from . import protocol
from .layout import target_folder
from .recipe import PROFILE_DIR, Profile

KINDS = ("attention", "plain")


def translator_options(prof: Profile, kind: str):
    from training.cyclegan.options import CycleGANOptions

    if kind not in KINDS:
        raise ValueError(f"unknown CycleGAN kind {kind!r} ({', '.join(KINDS)})")
    path = Path(prof.cyclegan)
    opts = CycleGANOptions.load(path if path.is_absolute() else PROFILE_DIR / path)
    return opts.replace(attention=kind == "attention")


def synthetic_folder(work: Path, prof: Profile, kind: str, data: Path = protocol.REAL_DATA, device: str = "cpu",
                     threads: int | None = None) -> Path:
    """Train (or resume, or find) the `kind` translator and translate the source CT; returns the synthetic folder.
    The run folder records the translator's options (training.resume): a translation made with other options is
    removed, and the translator trains again, never reused."""
    import torch

    from training.cyclegan.train import train
    from training.cyclegan.translate import translate
    from training.resume import claim

    run = work / "cyclegan" / kind
    synth = run / "synthetic"
    if not claim(run, translator_options(prof, kind).to_dict(), "synthetic/translate.json"):
        return synth
    ct = data / "ct_btcv"
    before = torch.get_num_threads()
    torch.set_num_threads(threads or prof.fine.threads)
    try:
        if not (run / "quality.json").is_file():
            train(ct / "imagesTr", ct / "labelsTr", target_folder(work, data), run, translator_options(prof, kind),
                  device=device, progress=False)
        translate(run / "checkpoints" / "latest.pt", ct / "imagesTr", ct / "labelsTr", synth, device=device,
                  progress=False)
    finally:
        torch.set_num_threads(before)
    return synth


def synthetic_cases(synth: Path) -> list[protocol.Case]:
    """The translated source cases (image, the source's label map)."""
    return [protocol.Case(p.name[:-len("_0000.nii.gz")], p, synth / "labels" / p.name.replace("_0000", ""))
            for p in sorted((synth / "images").glob("*_0000.nii.gz"))]
