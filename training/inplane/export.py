"""Trained 2D stages -> the engine's weights format: a card whose stages run on the scan's own slices.

A 2D PlainConvUNet and the card's 3D PlainConvUNet with (1, 3, 3) kernels, (1, 2, 2) strides and a patch of one
slice compute the same function: every 2D kernel becomes a 3D kernel of depth 1, and InstanceNorm3d over a
(1, H, W) patch is InstanceNorm2d over (H, W). `to_card_state` is that mapping (tested against the 2D network).
The card's spacing is None along z (no resampling between slices) and the fine stage has no mirror TTA: the
networks are trained without mirroring (x would swap the kidneys' sides, y turns the body front to back, z is
meaningless for a network that sees one slice), so a mirrored pass would show them images they never saw.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from inference.config import (FLARE_CAUDAL_TO, Architecture, PostprocessConfig, RoiConfig,
                              StageConfig)

from .layout import stage_dirs
from .data import NORMALIZATION
from .loop import build_net2d
from .recipe import Profile, StageRecipe, as_profile


# The fine stage reruns on a grown ROI while its organs touch an inner face: the 2D coarse stage trained on the CPU
# finds organs only in part (its learning curve), and on the unlabelled CHAOS target scans with the cpu profile's
# first row-A model the fine organs touched the ROI's lower z face in 3 of 10 scans (up to 2408 voxels, the kidneys'
# lower poles), in no in-plane face. A rerun of the 2D fine stage costs about a second on the CPU.
ROI_REGROW = {"regrow_mm": 30.0, "regrow_rounds": 2}

# Thin slices are resampled along z before each in-plane stage (StageConfig.min_slice_mm): a coronal or sagittal
# acquisition read as axial slices gives hundreds of 1-2 mm slices (a coronal reslice of a CHAOS scan: 180), each a
# network pass in both stages. The networks were trained on 2.5-9 mm slices; the coarse stage only finds the ROI.
# Measured on the reslices and the engine benchmark's Table-6 sizes: benchmarks/results/engine-thin-slices/.
MIN_SLICE_MM = {"coarse": 6.0, "fine": 3.0}


def to_card_state(state2d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """2D weights -> the (1, 3, 3)-kernel 3D network's: every 4D tensor (conv, transposed conv, 1x1 head) gets a
    depth axis of size 1; norm parameters and biases are unchanged."""
    return {k: (v.unsqueeze(2) if v.ndim == 4 else v).clone() for k, v in state2d.items()}


def card_stage(recipe: StageRecipe, label_ids, min_slice_mm: float | None = None, channels: int = 1,
               normalization=NORMALIZATION) -> StageConfig:
    n = len(recipe.features)
    arch = Architecture(
        input_channels=channels, n_stages=n, features_per_stage=tuple(recipe.features),
        kernel_sizes=((1, 3, 3),) * n, strides=((1, 1, 1),) + ((1, 2, 2),) * (n - 1),
        n_conv_per_stage=(2,) * n, n_conv_per_stage_decoder=(2,) * (n - 1), conv_bias=True,
        norm="InstanceNorm3d", norm_eps=1e-5, norm_affine=True, nonlin="LeakyReLU", nonlin_negative_slope=1e-2)
    return StageConfig(spacing_mm=tuple(recipe.spacing_mm), patch_size=(1,) + tuple(recipe.patch),
                       normalization=normalization, architecture=arch, label_ids=tuple(label_ids), step_size=0.5,
                       min_slice_mm=min_slice_mm)


def _engine_net(stage_dir: Path, recipe: StageRecipe, cfg: StageConfig):
    from inference.network import build_network

    net2d = build_net2d(recipe.features, cfg.num_classes, cfg.architecture.input_channels)
    net2d.load_state_dict(torch.load(stage_dir / "final.pt", map_location="cpu", weights_only=True))
    net = build_network(cfg.architecture, cfg.num_classes)
    net.load_state_dict(to_card_state(net2d.state_dict()), strict=True)
    return net


def export_row(work: Path, profile: str | Profile, row: str, out: Path, name: str, machine: str = "",
               onnx: bool = True) -> Path:
    """weights/<name>: the shared coarse stage + row `row`'s fine stage of the work folder `work` (`onnx` False:
    torch weights only, for the engine's torch backend on a machine that makes no ONNX files)."""
    from training.export import export_model

    prof = as_profile(profile)
    stages, prov = {}, {"profile": prof.to_dict(), "row": row, "machine": machine}
    r = prof.rows[row]
    dirs = stage_dirs(work, row, r.own_coarse)
    for stage, stage_dir, recipe in (("coarse", dirs["coarse"], prof.coarse),
                                     ("fine", dirs["fine"], prof.fine_recipe(row))):
        if not (stage_dir / "final.pt").is_file():
            raise FileNotFoundError(f"{stage_dir}: no final.pt (train the {stage} stage first)")
        summary = json.loads((stage_dir / "summary.json").read_text())
        cfg = card_stage(recipe, summary["label_ids"], MIN_SLICE_MM[stage])
        stages[stage] = (_engine_net(stage_dir, recipe, cfg), cfg)
        prov[stage] = {k: summary[k] for k in ("iterations", "trained_s", "seconds_per_iteration", "volumes",
                                               "torch", "device", "threads")}
    organs = tuple(sorted(set(stages["fine"][1].label_ids[1:])))
    caudal = tuple(p for p in FLARE_CAUDAL_TO if set(p) <= set(organs))
    return export_model(
        out, name=name, modalities=(r.modality,), stages=stages, provenance=prov, onnx=onnx,
        description=f"in-plane C2F, benchmark row {r.title}, profile {prof.name}; trained on labelled CT "
                    f"(BTCV) only unless the row says otherwise; network labels {list(organs)}",
        roi=RoiConfig(margin_mm=(20.0, 20.0, 20.0), max_extent_mm=(350.0, 350.0, 400.0), **ROI_REGROW),
        postprocess=PostprocessConfig(largest_component_organs=organs, caudal_to=caudal))


def from_card_state(card_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `to_card_state`: the (1, 3, 3)-kernel 3D network's weights -> the 2D network's (every 5D
    tensor loses its depth axis of size 1)."""
    bad = [k for k, v in card_state.items() if v.ndim == 5 and v.shape[2] != 1]
    if bad:
        raise ValueError(f"not an in-plane card network: {bad[0]} has depth {card_state[bad[0]].shape[2]}")
    return {k: (v.squeeze(2) if v.ndim == 5 else v).clone() for k, v in card_state.items()}


def stage_from_onnx(onnx_file: Path, features, num_classes: int) -> dict[str, torch.Tensor]:
    """A shipped in-plane stage (ONNX, as `export_row` writes it) -> the 2D network's state dict, so that a model
    published only as ONNX can start a fine stage. ONNX keeps each shared tensor once (the network's
    `all_modules` aliases of its convolutions and norms); they are filled from the module they alias."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(str(onnx_file)).graph.initializer}
    net = build_net2d(features, num_classes)
    state = net.state_dict()
    groups: dict[int, list[str]] = {}   # tensors shared under several names (aliases), by storage
    for k, v in state.items():
        groups.setdefault(v.data_ptr(), []).append(k)
    found = from_card_state({k: v for k, v in inits.items() if k in state})
    # the deep-supervision heads of the coarser decoder levels are not in the graph (the network runs without
    # deep supervision): they keep their initial values, as they did in training
    unused = tuple(f"decoder.seg_layers.{i}." for i in range(len(features) - 2))
    missing = [names[0] for names in groups.values()
               if not any(n in found for n in names) and not names[0].startswith(unused)]
    if missing:
        raise ValueError(f"{onnx_file}: no weights for {missing[:3]} ({len(missing)} tensors): another network")
    net.load_state_dict(found, strict=False)   # the aliases share their tensors with the ones just loaded
    return {k: v.float() for k, v in net.state_dict().items()}
