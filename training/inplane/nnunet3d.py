"""The benchmark's rows that train the 3D nnU-Net v2 coarse-to-fine model (training.c2f) instead of the 2D one.

Such a row is the same step graph as every other row (steps.row_steps): its translator or pseudo-labels first,
then the training chain of training.c2f as steps (convert -> plan -> coarse, fine -> export; each a
`python -m training.c2f` command, resumed by nnU-Net's latest checkpoint, training.resume's rule), then the same
score step. Its training sets are folders of links under WORK/rows/<row>/nnunet/sources/:

    btcv/                the 30 BTCV CT (source "btcv"), or the CHAOS target scans with their labels
                         ("chaos_target", the upper bound)
    syn<kind>/           the CT translated by the row's CycleGAN (synthetic rows)
    pseudo/              the target scans the filter kept, with their training labels (self-training rows):
                         voxels left out of the loss carry nnU-Net's ignore label (the highest label, 14)

The network has a channel for every FLARE organ (nnU-Net wants consecutive labels), including the duodenum that
no source here labels; the model's card lists the organs the row's sources hold.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.runner import Step

from . import protocol
from .data import IGNORE
from .recipe import Profile

NNUNET_IGNORE = 14   # nnU-Net's ignore label: the highest label, max class (13) + 1


def nnunet_folder(work: Path, row: str) -> Path:
    return work / "rows" / row / "nnunet"


def spec_dict(prof: Profile, row: str) -> dict:
    """The row's C2FSpec as JSON: the profile's, with nnU-Net's ignore label when pseudo-labels train it."""
    from training.c2f.config import C2FSpec, default_spec

    spec = prof.nnunet3d.spec or default_spec().to_dict()
    spec = C2FSpec.from_dict(spec).to_dict()   # validated, defaults filled
    if prof.rows[row].selftrain is not None:
        spec["labels"] = {**spec["labels"], "ignore": NNUNET_IGNORE}
    return spec


def _link_cases(cases: list[protocol.Case], folder: Path) -> str:
    """Links to `cases` under folder/{images,labels}; returns the convert source `NAME=IMAGES,LABELS`."""
    missing = [str(p) for c in cases for p in (c.image, c.label) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} training file(s) missing, e.g. {missing[0]}")
    for c in cases:
        for src, dst in ((c.image, folder / "images" / f"{c.name}_0000.nii.gz"),
                         (c.label, folder / "labels" / f"{c.name}.nii.gz")):
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            os.symlink(src.resolve(), dst)
    return f"{folder.name}={folder / 'images'},{folder / 'labels'}"


def link_sources(work: Path, prof: Profile, row: str, data: Path) -> list[str]:
    """The row's training sets as convert sources (folders of links and the re-labelled pseudo-labels, made anew
    each time: they are cheap, and never outlive the pseudo-labels they come from)."""
    import shutil

    r, base = prof.rows[row], nnunet_folder(work, row) / "sources"
    shutil.rmtree(base, ignore_errors=True)
    sources = [_link_cases(protocol.source_cases(r.source, data)[0], base / "btcv")]
    if r.synthetic:
        from .synthetic import synthetic_cases

        synth = work / "cyclegan" / r.synthetic / "synthetic"
        sources.append(_link_cases(synthetic_cases(synth), base / f"syn{r.synthetic}"))
    if r.selftrain is not None:
        sources.append(_pseudo_source(work, prof, row, base / "pseudo"))
    return sources


def _pseudo_source(work: Path, prof: Profile, row: str, folder: Path) -> str:
    """The kept target scans with their training labels, IGNORE written as nnU-Net's ignore label."""
    from inference.io import read_image, write_labels

    from .pseudo import pseudo_cases

    cases = []
    for c in pseudo_cases(work, prof, row):
        label = folder / "labels_made" / f"{c.name}.nii.gz"
        if not label.is_file():
            loaded = read_image(c.label)
            lab = np.array(loaded.array, dtype=np.uint8)
            lab[lab == IGNORE] = NNUNET_IGNORE
            label.parent.mkdir(parents=True, exist_ok=True)
            write_labels(lab, loaded.image, label)
        cases.append(protocol.Case(c.name, c.image, label))
    return _link_cases(cases, folder)


def nnunet_steps(work: Path, prof: Profile, row: str, deps: tuple[str, ...], data: Path, device: str,
                 threads: int | None) -> list[Step]:
    """Steps r<row>.sources (the spec file and the training sets), then training.c2f's chain r<row>.convert ->
    plan -> coarse, fine -> export into WORK/models/r<row>."""
    from training.c2f.chain import C2FChain, StageTraining, chain_steps

    from inference.atomic import write_json

    r, cfg, base = prof.rows[row], prof.nnunet3d, nnunet_folder(work, row)
    spec, spec_file, sources_file = spec_dict(prof, row), base / "spec.json", base / "sources.json"

    def prepare() -> str:
        write_json(spec_file, spec, mkdir=True)
        write_json(sources_file, link_sources(work, prof, row, data))
        return str(base)

    names = ["btcv"] + ([f"syn{r.synthetic}"] if r.synthetic else []) + (["pseudo"] if r.selftrain else [])
    sources = tuple(f"{n}={base / 'sources' / n / 'images'},{base / 'sources' / n / 'labels'}" for n in names)
    chain = C2FChain(work=base, sources=sources, out=work / "models" / f"r{row}", name=f"r{row}",
                     description=f"benchmark row {r.title}, profile {prof.name}; 3D nnU-Net v2 C2F (training.c2f)",
                     spec=spec_file, trainer=cfg.trainer, lr=cfg.lr, device=device,
                     threads=(threads or 1) if device == "cpu" else None, workers=cfg.workers,
                     da_workers=cfg.da_workers, coarse=StageTraining(**cfg.coarse), fine=StageTraining(**cfg.fine),
                     modalities=(r.modality,))
    prep = Step(f"r{row}.sources", deps, func=prepare,
                settings={"spec": spec, "source": r.source, "data": str(data), "sources": list(sources)})
    return [prep, *chain_steps(f"r{row}.", chain, (prep.name,))]
