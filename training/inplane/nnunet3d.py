"""The benchmark's rows that train the 3D nnU-Net v2 coarse-to-fine model (training.c2f) instead of the 2D one.

Such a row is the same step graph as every other row (steps.row_steps): its translator or pseudo-labels first,
then the training chain of training.c2f as steps (convert -> plan -> coarse, fine -> export; each a
`python -m training.c2f` command, resumed by nnU-Net's latest checkpoint, training.resume's rule), then the same
score step. Its training sets are written from the pack (the one data path: the pack's 2 mm canonical grid, the
scans' own intensities) under WORK/rows/<row>/nnunet/sources/:

    btcv/                the 30 BTCV CT (source "btcv"), or the CHAOS target scans with their labels
                         ("chaos_target", the upper bound)
    syn<kind>/           the CT translated by the row's CycleGAN (synthetic rows)
    pseudo/              the target scans the filter kept, with their training labels (self-training rows):
                         voxels left out of the loss carry nnU-Net's ignore label (the highest label, 14)

The network has a channel for every FLARE organ (nnU-Net wants consecutive labels), including the duodenum that
no source here labels; the model's card lists the organs the row's sources hold.
"""
from __future__ import annotations

from pathlib import Path

from training.runner import Step

from .data import IGNORE, Volume, label_map
from .pack import load_packed, pack_grid, packed_set
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


def _write_source(volumes: list[Volume], folder: Path) -> str:
    """Packed volumes as an nnU-Net source under folder/{images,labels}: each scan's own intensities
    (`Volume.raw`) and its labels (FLARE ids; IGNORE as nnU-Net's ignore label), on the pack's canonical grid
    (identity direction); returns the convert source `NAME=IMAGES,LABELS`."""
    from training.c2f.convert import write_volume

    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for v in volumes:
        lab = label_map(v)
        lab[lab == IGNORE] = NNUNET_IGNORE
        write_volume(v.raw(), v.spacing_mm, folder / "images" / f"{v.name}_0000.nii.gz")
        write_volume(lab, v.spacing_mm, folder / "labels" / f"{v.name}.nii.gz")
    return f"{folder.name}={folder / 'images'},{folder / 'labels'}"


def write_sources(work: Path, prof: Profile, row: str, pack: Path) -> list[str]:
    """The row's training sets as convert sources, from the pack and the packs its preparing steps made (made
    anew each time: they never outlive the packs they come from)."""
    import shutil

    from .packed import pseudo_pack, synthetic_pack

    r, base = prof.rows[row], nnunet_folder(work, row) / "sources"
    shutil.rmtree(base, ignore_errors=True)
    grid = pack_grid(pack)
    parts = [(pack, r.source, "btcv")]
    if r.synthetic:
        parts.append((synthetic_pack(work, r.synthetic), "all", f"syn{r.synthetic}"))
    if r.selftrain is not None:
        parts.append((pseudo_pack(work, row), "all", "pseudo"))
    return [_write_source(load_packed(path, grid, packed_set(path, set_name)), base / name)
            for path, set_name, name in parts]


def nnunet_steps(work: Path, prof: Profile, row: str, deps: tuple[str, ...], pack: Path, device: str,
                 threads: int | None) -> list[Step]:
    """Steps r<row>.sources (the spec file and the training sets), then training.c2f's chain r<row>.convert ->
    plan -> coarse, fine -> export into WORK/models/r<row>."""
    from training.c2f.chain import C2FChain, StageTraining, chain_steps

    from inference.atomic import write_json

    r, cfg, base = prof.rows[row], prof.nnunet3d, nnunet_folder(work, row)
    spec, spec_file, sources_file = spec_dict(prof, row), base / "spec.json", base / "sources.json"

    def prepare() -> str:
        write_json(spec_file, spec, mkdir=True)
        write_json(sources_file, write_sources(work, prof, row, pack))
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
                settings={"spec": spec, "source": r.source, "pack": str(pack), "sources": list(sources)})
    return [prep, *chain_steps(f"r{row}.", chain, (prep.name,))]
