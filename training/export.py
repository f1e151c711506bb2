"""Export trained networks to the engine's weights format: weights/<model>/{model.json, *.pt, *.onnx}.

The card is written last (atomically), after every weight file and its sha256, so a half-finished export is never
a loadable model.
"""
from __future__ import annotations

import subprocess
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from inference.atomic import atomic_path, copy_file
from inference.config import ModelCard, StageConfig
from inference.model_folder import load_model_folder, sha256_of, write_card
from inference.network import build_network, count_parameters

ONNX_OPSET = 17


def git_commit(repo: Path | None = None) -> str:
    """Commit hash of the repository holding this code (or 'unknown')."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo or Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_onnx(net: torch.nn.Module, patch_size, path: Path) -> None:
    """Export `net` for input (batch, 1, *patch_size) with a dynamic batch axis."""
    net = net.eval().cpu()
    x = torch.zeros((1, 1) + tuple(patch_size), dtype=torch.float32)
    with atomic_path(path) as tmp, warnings.catch_warnings():  # the tracer's notes on instance norm and shape checks are expected
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*instance_norm.*", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(torch\.onnx|training\.export).*")
        torch.onnx.export(net, (x,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)


def save_state(net: torch.nn.Module, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)


def export_model(folder: Path, *, name: str, description: str, modalities: tuple[str, ...],
                 stages: dict[str, tuple[torch.nn.Module, StageConfig]], provenance: dict[str, Any] | None = None,
                 onnx: bool = True, **card_fields: Any) -> Path:
    """Write `folder` (model card + torch weights + ONNX) for the networks of the 'coarse' and 'fine' stages.

    Each network must be the card architecture's PlainConvUNet (inference.network) or load into it strictly.
    Returns the folder; the export is verified by loading it back with sha256 checks.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if set(stages) != {"coarse", "fine"}:
        raise ValueError("stages must be exactly 'coarse' and 'fine'")
    sha: dict[str, str] = {}
    final: dict[str, StageConfig] = {}
    params: dict[str, int] = {}
    for stage_name, (net, cfg) in stages.items():
        engine_net = build_network(cfg.architecture, cfg.num_classes)
        engine_net.load_state_dict(net.state_dict(), strict=True)
        files = {"torch": f"{stage_name}.pt"}
        save_state(engine_net, folder / files["torch"])
        if onnx:
            files["onnx"] = f"{stage_name}.onnx"
            export_onnx(engine_net, cfg.patch_size, folder / files["onnx"])
        sha.update({fname: sha256_of(folder / fname) for fname in files.values()})
        final[stage_name] = replace(cfg, files=files)
        params[stage_name] = count_parameters(engine_net)
    prov = {"git_commit": git_commit(), "torch": torch.__version__, "parameters": params, **(provenance or {})}
    card = ModelCard(name=name, description=description, modalities=tuple(modalities), coarse=final["coarse"],
                     fine=final["fine"], provenance=prov, sha256=sha, **card_fields)
    write_card(card, folder)
    load_model_folder(folder, verify=True)
    return folder


def copy_weight_file(src: Path, dst: Path) -> str:
    """Copy one weight file under a temporary name, then rename (never a half-written file at `dst`); returns the
    copy's sha256 for the card."""
    copy_file(src, dst)
    return sha256_of(dst)


def compose_model(coarse_from: Path, fine_from: Path, out: Path, *, name: str, note: str = "") -> Path:
    """A model whose coarse stage comes from `coarse_from` and whose fine stage (with the ROI and clean-up rules
    that belong to it) comes from `fine_from`: weight files copied unchanged (sha256-checked on both ends), the
    modalities both serve, both cards' provenance kept. The stages must predict the same labels. Files first, the
    card last (atomically), so a half-written folder is never a loadable model."""
    src_c = load_model_folder(Path(coarse_from), verify=True)
    src_f = load_model_folder(Path(fine_from), verify=True)
    coarse, fine = src_c.card.coarse, src_f.card.fine
    if coarse.label_ids != fine.label_ids:
        raise ValueError(f"{coarse_from} coarse labels {coarse.label_ids} differ from {fine_from} fine labels "
                         f"{fine.label_ids}")
    modalities = tuple(m for m in src_f.card.modalities if m in src_c.card.modalities)
    if not modalities:
        raise ValueError(f"{coarse_from} ({src_c.card.modalities}) and {fine_from} ({src_f.card.modalities}) serve "
                         "no modality in common")
    out = Path(out)
    if out.resolve() in (Path(coarse_from).resolve(), Path(fine_from).resolve()):
        raise ValueError(f"{out}: write the composed model to a new folder")
    out.mkdir(parents=True, exist_ok=True)
    sha: dict[str, str] = {}
    stages = {}
    for stage_name, cfg, src in (("coarse", coarse, Path(coarse_from)), ("fine", fine, Path(fine_from))):
        files = {}
        for backend, fname in cfg.files.items():
            target = f"{stage_name}.{fname.rsplit('.', 1)[-1]}"
            sha[target] = copy_weight_file(src / fname, out / target)
            files[backend] = target
        stages[stage_name] = replace(cfg, files=files)
    prov = {"composed": {"coarse_from": {"name": src_c.card.name, "provenance": src_c.card.provenance},
                         "fine_from": {"name": src_f.card.name, "provenance": src_f.card.provenance},
                         "note": note}}
    card = replace(src_f.card, name=name, modalities=modalities, coarse=stages["coarse"], fine=stages["fine"],
                   sha256=sha, provenance=prov,
                   description=f"coarse stage of {src_c.card.name} + fine stage of {src_f.card.name}"
                               + (f". {note}" if note else ""))
    write_card(card, out)
    load_model_folder(out, verify=True)
    return out
