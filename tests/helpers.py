"""Test helpers: tiny randomly initialised models in temporary weights folders, synthetic images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from inference.config import TTA, Architecture, Normalization, PostprocessConfig, RoiConfig, StageConfig
from inference.network import build_network
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


def blob_image(shape=(40, 64, 64), center=None, radius=8.0, seed=0) -> np.ndarray:
    """Noisy background with one bright sphere (float32)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    c = center or tuple(s // 2 for s in shape)
    inside = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius ** 2
    return (rng.normal(0, 1, shape) + 10 * inside).astype(np.float32)


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


def abdomen_phantom(shape=(12, 80, 96), kidney_zy=((4, 9), (50, 60)), kidney_x=((25, 35), (60, 70))):
    """Elliptic body with a liver block, a spleen block and two kidneys (FLARE labels 1, 3, 2 right, 13 left),
    numpy (z, y, x) in the canonical frame (axis 1 anterior -> posterior, x towards the patient's left)."""
    _, yy, xx = np.indices(shape)
    body = ((yy - 40) / 36.0) ** 2 + ((xx - 48) / 44.0) ** 2 <= 1.0
    labels = np.zeros(shape, np.uint8)
    labels[2:10, 20:45, 15:45] = 1
    labels[2:10, 20:40, 60:78] = 3
    (z0, z1), (y0, y1) = kidney_zy
    for organ, (x0, x1) in zip((2, 13), kidney_x):
        labels[z0:z1, y0:y1, x0:x1] = organ
    return labels, body
