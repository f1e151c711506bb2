"""Translate labelled CT volumes into synthetic target-modality volumes (FLARE layout, original geometry).

    OUT/images/<case>_0000.nii.gz   G_A(CT), mapped back through the inverse preprocessing onto the CT's voxel grid,
                                    intensities on the target training volumes' median window
    OUT/labels/<case>.nii.gz        the CT label map (uint8), with the image's geometry
    OUT/translate.json              provenance (checkpoint, epoch, modality, window, cases)

Finished cases are skipped unless `overwrite`; every file is written under a temporary name and renamed.
`translate_case` does one case, file or in memory, and returns the array (no SimpleITK needed for an ArrayCase).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from inference.atomic import write_json

from .data import AnyCase, array_case, find_cases, prepare_case, read_case
from .model import OrganAttentionCycleGAN
from .options import CycleGANOptions
from .preprocess import BACKGROUND, InPlanePad, IntensityWindow, PreparedVolume, restore_volume

CHECKPOINT_FORMAT = "flare-uda-cyclegan/1"
TRANSLATOR = "G_A"     # the source -> target generator: the only network translate_case runs


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[OrganAttentionCycleGAN, dict]:
    """Model (weights loaded, eval mode) and the checkpoint dict (options, epoch, target window, ...)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a CycleGAN checkpoint (format {CHECKPOINT_FORMAT})")
    opts = CycleGANOptions.from_dict(ckpt["options"])
    model = OrganAttentionCycleGAN(opts, device)
    if ckpt.get("parts") == [TRANSLATOR]:     # translator_only: the translating generator alone
        model.G_A.load_state_dict({k[len(TRANSLATOR) + 1:]: v for k, v in ckpt["weights"].items()})
    else:
        model.load_state_dict(ckpt["weights"])
    model.eval()
    return model, ckpt


def translator_only(ckpt: dict) -> dict:
    """A checkpoint that translates and does nothing else: G_A's weights alone (a tenth of the five networks'),
    without the optimiser and image pool; `load_checkpoint` reads it (the other networks stay untrained)."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a CycleGAN checkpoint (format {CHECKPOINT_FORMAT})")
    weights = {k: v for k, v in ckpt["weights"].items() if k.startswith(TRANSLATOR + ".")}
    return {**{k: v for k, v in ckpt.items() if k != "training"}, "weights": weights, "parts": [TRANSLATOR]}


def run_slices(fn: Callable[[torch.Tensor], torch.Tensor], volume: np.ndarray, divisor: int, batch_size: int,
               device: torch.device, fill: float = BACKGROUND) -> np.ndarray:
    """Apply a 2D network `fn` to every slice of a (z, y, x) array: pad to the divisor, batch, unpad.

    Returns (z, C, y, x) float32 (C = the network's output channels)."""
    pad = InPlanePad.to_multiple(volume.shape[1:], divisor)
    padded = pad.apply(np.asarray(volume, dtype=np.float32), fill=fill)
    outs = []
    with torch.no_grad():
        for z0 in range(0, padded.shape[0], batch_size):
            x = torch.from_numpy(np.ascontiguousarray(padded[z0:z0 + batch_size]))[:, None].to(device)
            outs.append(fn(x).float().cpu().numpy())
    return pad.invert(np.concatenate(outs, 0))


def translate_prepared(model: OrganAttentionCycleGAN, volume: PreparedVolume, batch_size: int = 8) -> np.ndarray:
    """G_A on every slice of a prepared CT volume -> fake target volume on the prepared grid, in [-1, 1]."""
    return run_slices(model.G_A, volume.image, model.opts.divisor, batch_size, model.device)[:, 0]


def translate_case(model: OrganAttentionCycleGAN, ckpt: dict, case: AnyCase, batch_size: int = 8) -> np.ndarray:
    """G_A(CT) of one case (file or in memory) on the case's own voxel grid (SimpleITK array order, float32),
    intensities on the checkpoint's target window; the case's label is not used."""
    prepared = prepare_case(dataclasses.replace(case, label=None), "ct", model.opts)
    fake = translate_prepared(model, prepared, batch_size)
    restored = restore_volume(fake, prepared.transform, IntensityWindow(*ckpt["target_window"]))
    return restored.astype(np.float32, copy=False)


def translate(checkpoint: Path, ct_images: Path, ct_labels: Path, out_dir: Path, *,
              device: torch.device | str = "cpu", batch_size: int = 8, overwrite: bool = False,
              progress: bool = True) -> list[str]:
    """Translate every labelled CT case of `ct_images`/`ct_labels`; returns the names of the cases written."""
    import SimpleITK as sitk
    from tqdm import tqdm

    from inference.io import write_image_atomic

    model, ckpt = load_checkpoint(checkpoint, device)
    opts = model.opts
    cases = find_cases(ct_images, ct_labels)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    written = []
    for case in tqdm(cases, desc="translate", disable=not progress):
        img_out = out_dir / "images" / f"{case.name}_0000.nii.gz"
        lab_out = out_dir / "labels" / f"{case.name}.nii.gz"
        if not overwrite and img_out.exists() and lab_out.exists():
            continue
        image, label = read_case(case, opts.num_classes)
        # read once (the outputs take its geometry); named by its file so errors name it
        restored = translate_case(model, ckpt, array_case(str(case.image), image), batch_size)
        out = sitk.GetImageFromArray(restored)
        out.CopyInformation(image)
        write_image_atomic(out, img_out, compression_level=-1)      # -1: SimpleITK's default level
        write_image_atomic(label, lab_out, compression_level=-1)    # read_case: uint8 on the image's grid
        written.append(case.name)
    meta = {"checkpoint": str(Path(checkpoint).resolve()), "epoch": ckpt.get("epoch"),
            "target_modality": opts.target_modality, "attention": opts.attention,
            "target_window": list(ckpt["target_window"]), "cases": [c.name for c in cases]}
    write_json(out_dir / "translate.json", meta)
    return written
