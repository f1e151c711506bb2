"""Step 4: nnU-Net checkpoints of the coarse and fine stages -> weights/<model>/ (card + torch + ONNX).

The nnU-Net output folder is self-contained (plans.json, dataset.json with our 'c2f' block, checkpoint), so the
card is derived from it: spacing and patch from the plans, normalisation and ROI margin from the spec the data were
prepared with, the ROI's plausibility cap (roi.max_extent_mm) from the caller, the network weights loaded strictly
into the engine's PlainConvUNet (same state_dict keys as dynamic-network-architectures' PlainConvUNet: no mapping
needed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from inference.config import FLARE_CAUDAL_TO, FLARE_LATERAL_PAIRS, TTA, PostprocessConfig, RoiConfig, StageConfig
from inference.model_folder import sha256_of
from inference.network import build_network
from training.export import export_model

from .config import C2FSpec
from .planner import CONFIGURATION, read_raw_dataset

# largest plausible extent (z, y, x mm) of the union of the abdominal organs' boxes, before the ROI margin: a
# coarse organ union wider than this (spurious blobs, a head-to-legs PET) is cut down to the organs that fit
DEFAULT_ROI_MAX_EXTENT_MM = (350.0, 350.0, 400.0)
# fine-stage organs touching an inner ROI face grow it by this much and the fine stage reruns, up to N times: on
# CHAOS with the shipped row-2 model (no TTA) mean DSC 0.485 -> 0.571, liver 0.38 -> 0.72 (README, uda-h200-rows2p)
DEFAULT_ROI_REGROW_MM = 40.0
DEFAULT_ROI_REGROW_ROUNDS = 3


@dataclass(frozen=True)
class TrainedStage:
    folder: Path  # nnU-Net output folder of one trainer/plans/configuration (holding fold_*)
    fold: str = "all"
    checkpoint: str = "checkpoint_final.pth"
    tta: TTA = TTA()
    step_size: float = 0.5


def load_trained_stage(stage: TrainedStage) -> tuple[torch.nn.Module, StageConfig, C2FSpec, dict[str, Any]]:
    """(engine network with the checkpoint's weights, its StageConfig, the data spec, provenance)."""
    folder = Path(stage.folder)
    plans = json.loads((folder / "plans.json").read_text())
    ds, spec, stage_name = read_raw_dataset(folder)   # nnU-Net's copy of the converted dataset.json
    sspec = spec.stage(stage_name)
    ckpt_path = folder / f"fold_{stage.fold}" / stage.checkpoint
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: no checkpoint (train first, or pick --checkpoint)")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    config = plans["configurations"][CONFIGURATION]
    label_ids = tuple(sorted(int(v) for k, v in ds["labels"].items() if k != "ignore"))  # ignore: no output
    cfg = StageConfig(spacing_mm=tuple(float(s) for s in config["spacing"]),  # type: ignore[arg-type]
                      patch_size=tuple(int(p) for p in config["patch_size"]),  # type: ignore[arg-type]
                      normalization=sspec.normalization, architecture=sspec.network.architecture(),
                      label_ids=label_ids, tta=stage.tta, step_size=stage.step_size)
    net = build_network(cfg.architecture, cfg.num_classes)
    net.load_state_dict(ckpt["network_weights"], strict=True)
    net.eval()
    debug_file = folder / f"fold_{stage.fold}" / "debug.json"
    debug = json.loads(debug_file.read_text()) if debug_file.is_file() else {}
    prov = {
        "dataset": plans["dataset_name"],
        "stage": stage_name,
        "sources": ds["c2f"].get("sources", {}),
        "training_cases": int(ds.get("numTraining", 0)),
        "trainer": ckpt.get("trainer_name"),
        "plans": plans["plans_name"],
        "configuration": CONFIGURATION,
        "fold": stage.fold,
        "checkpoint": stage.checkpoint,
        "checkpoint_sha256": sha256_of(ckpt_path),
        "epochs_completed": int(ckpt["current_epoch"]),
        "num_epochs": int(debug["num_epochs"]) if "num_epochs" in debug else None,
        "iterations_per_epoch": int(debug["num_iterations_per_epoch"]) if "num_iterations_per_epoch" in debug else None,
        "batch_size": int(config["batch_size"]),
        "patch_size": list(config["patch_size"]),
    }
    return net, cfg, spec, prov


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def export_c2f(out_folder: Path, coarse: TrainedStage, fine: TrainedStage, *, name: str | None = None,
               description: str = "", modalities: tuple[str, ...] = ("MRI", "PET"), onnx: bool = True,
               extra_provenance: dict[str, Any] | None = None,
               roi_max_extent_mm: tuple[float, float, float] | None = DEFAULT_ROI_MAX_EXTENT_MM,
               roi_from: RoiConfig | None = None, postprocess: PostprocessConfig | None = None) -> Path:
    """Write the engine's model folder from the two trained stages; returns it (verified by loading it back).

    `extra_provenance` entries are added to the card's provenance (e.g. the self-training cycle).
    `roi_max_extent_mm` becomes the card's roi.max_extent_mm (z, y, x mm; None: no cap), with regrowth at the
    export defaults; `roi_from` instead: that ROI config's cap and regrowth (a fine-tuned model keeps those of the
    model it started from). The ROI margin is always the fine stage's training margin. `postprocess`: default
    the FLARE left/right pairs and largest components."""
    out_folder = Path(out_folder)
    c_net, c_cfg, _, c_prov = load_trained_stage(coarse)
    f_net, f_cfg, f_spec, f_prov = load_trained_stage(fine)
    if c_cfg.label_ids != f_cfg.label_ids:
        raise ValueError(f"coarse labels {c_cfg.label_ids} differ from fine labels {f_cfg.label_ids}")
    if c_prov["stage"] != "coarse" or f_prov["stage"] != "fine":
        raise ValueError(f"stage mix-up: got {c_prov['stage']!r} as coarse and {f_prov['stage']!r} as fine")
    provenance = {
        "training": {"coarse": c_prov, "fine": f_prov},
        "nnunetv2": _version("nnunetv2"),
        "dynamic_network_architectures": _version("dynamic-network-architectures"),
        "fine_crop": {"margin_mm": list(f_spec.margin_mm), "jitter_mm": list(f_spec.jitter_mm),
                      "crops_per_case": f_spec.crops_per_case},
        **(extra_provenance or {}),
    }
    roi = (replace(roi_from, margin_mm=f_spec.margin_mm) if roi_from is not None else
           RoiConfig(margin_mm=f_spec.margin_mm, max_extent_mm=roi_max_extent_mm, regrow_mm=DEFAULT_ROI_REGROW_MM,
                     regrow_rounds=DEFAULT_ROI_REGROW_ROUNDS))
    return export_model(out_folder, name=name or out_folder.name,
                        description=description or "coarse-to-fine nnU-Net v2 PlainConvUNets (training.c2f)",
                        modalities=tuple(modalities), stages={"coarse": (c_net, c_cfg), "fine": (f_net, f_cfg)},
                        provenance=provenance, onnx=onnx,
                        roi=roi, postprocess=postprocess or PostprocessConfig(lateral_pairs=FLARE_LATERAL_PAIRS,
                                                                               caudal_to=FLARE_CAUDAL_TO))
