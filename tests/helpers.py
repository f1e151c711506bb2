"""Test helpers: tiny randomly initialised models in temporary weights folders, a tiny C2F spec, an image writer
(the phantoms are in phantoms.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from inference.config import TTA, Architecture, Normalization, PostprocessConfig, RoiConfig, StageConfig
from inference.network import build_network
from training.c2f.config import C2FSpec, NetworkSpec, StageSpec
from training.export import export_model

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MRI_LABELS = tuple(range(14))


def tiny_arch(features=(4, 8, 16)) -> Architecture:
    n = len(features)
    return Architecture(
        input_channels=1, n_stages=n, features_per_stage=tuple(features),
        kernel_sizes=tuple((3, 3, 3) for _ in range(n)),
        strides=((1, 1, 1),) + tuple((2, 2, 2) for _ in range(n - 1)),
        n_conv_per_stage=(1,) * n, n_conv_per_stage_decoder=(1,) * (n - 1))


def tiny_stage(spacing, patch, tta_axes=(), step=0.5, labels=MRI_LABELS, features=(4, 8, 16)) -> StageConfig:
    return StageConfig(spacing_mm=tuple(spacing), patch_size=tuple(patch),
                       normalization=Normalization("zscore", (0.5, 99.5)), architecture=tiny_arch(features),
                       label_ids=tuple(labels), tta=TTA(axes=tuple(tta_axes)), step_size=step)


def make_random_model(folder: Path, seed: int = 0, modalities=("MRI", "PET"), coarse=None, fine=None,
                      onnx: bool = True, bias_foreground: float = 0.0) -> Path:
    """A randomly initialised coarse+fine model (TEST ONLY, never shipped).

    `bias_foreground` adds to the final layer's bias of every organ channel so that random nets predict organs.
    """
    torch.manual_seed(seed)
    coarse = coarse or tiny_stage((6.0, 6.0, 6.0), (16, 32, 32))
    fine = fine or tiny_stage((3.0, 2.0, 2.0), (16, 32, 32), tta_axes=(1, 2))
    stages = {}
    for name, cfg in (("coarse", coarse), ("fine", fine)):
        net = build_network(cfg.architecture, cfg.num_classes)
        with torch.no_grad():
            net.decoder.seg_layers[-1].bias[1:] += bias_foreground
        stages[name] = (net, cfg)
    return export_model(folder, name=folder.name, description="random test model", modalities=modalities,
                        stages=stages, onnx=onnx, provenance={"training": "none: random weights for tests"},
                        roi=RoiConfig(margin_mm=(10.0, 10.0, 10.0)), postprocess=PostprocessConfig())


def write_image(arr: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    """Write numpy (z, y, x) `arr` with ITK-order spacing/origin/direction."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection(tuple(float(d) for d in direction))
    sitk.WriteImage(img, str(path))
    return img


def stub_card_model(folder: Path, description: str, **card_fields) -> Path:
    """A coarse (4 mm) + fine (2 mm) model folder with unnormalised input, for tests that replace the networks by a
    stub backend (pipeline.make_backend patched): only the card matters. Returns the weights folder (parent)."""
    from dataclasses import replace

    stages = {}
    for name, cfg in (("coarse", tiny_stage((4.0, 4.0, 4.0), (16, 32, 32))),
                      ("fine", tiny_stage((2.0, 2.0, 2.0), (16, 32, 32)))):
        cfg = replace(cfg, normalization=Normalization("none"))
        torch.manual_seed(0)
        stages[name] = (build_network(cfg.architecture, cfg.num_classes), cfg)
    export_model(folder, name=folder.name, description=description, modalities=("MRI", "PET"), stages=stages,
                 onnx=False, **card_fields)
    return folder.parent


def tiny_spec(crops_per_case: int = 2) -> C2FSpec:
    """training.c2f spec with small grids and 3-stage nets (CPU tests: a training iteration takes a fraction of a
    second)."""
    net = NetworkSpec((4, 8, 16), ((1, 1, 1), (2, 2, 2), (2, 2, 2)), n_conv_per_stage=1, n_conv_per_stage_decoder=1)
    coarse = StageSpec(spacing_mm=(6.0, 6.0, 6.0), patch_size=(8, 16, 16), network=net, batch_size=2)
    fine_net = NetworkSpec((8, 16, 32), ((1, 1, 1), (2, 2, 2), (2, 2, 2)))
    fine = StageSpec(spacing_mm=(3.0, 2.0, 2.0), patch_size=(16, 32, 32), network=fine_net, batch_size=2)
    return C2FSpec(coarse=coarse, fine=fine, margin_mm=(6.0, 6.0, 6.0), jitter_mm=(3.0, 3.0, 3.0),
                   crops_per_case=crops_per_case)
