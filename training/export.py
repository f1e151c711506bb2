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
from inference.config import ContextConfig, ModelCard, StageConfig
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


def export_onnx(net: torch.nn.Module, patch_size, path: Path, channels: int = 1) -> None:
    """Export `net` for input (batch, channels, *patch_size) with a dynamic batch axis."""
    net = net.eval().cpu()
    x = torch.zeros((1, channels) + tuple(patch_size), dtype=torch.float32)
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


def write_stage(folder: Path, stage_name: str, net: torch.nn.Module, cfg: StageConfig, backends,
                sha: dict[str, str]) -> tuple[StageConfig, int]:
    """`net` (loaded strictly into the card architecture's PlainConvUNet) as folder/<stage_name>.pt and/or .onnx
    (`backends`: "torch", "onnx"); their sha256 go into `sha`. Returns the stage config naming its files and the
    network's parameter count."""
    engine_net = build_network(cfg.architecture, cfg.num_classes)
    engine_net.load_state_dict(net.state_dict(), strict=True)
    files = {b: f"{stage_name}.{'pt' if b == 'torch' else 'onnx'}" for b in backends}
    if "torch" in files:
        save_state(engine_net, folder / files["torch"])
    if "onnx" in files:
        export_onnx(engine_net, cfg.patch_size, folder / files["onnx"], cfg.architecture.input_channels)
    sha.update({fname: sha256_of(folder / fname) for fname in files.values()})
    return replace(cfg, files=files), count_parameters(engine_net)


def with_stages(card: ModelCard, stages: dict[str, StageConfig], **fields: Any) -> ModelCard:
    """`card` with its stage configs replaced by `stages` (coarse, fine, and context when the card has one) and
    any other `fields`."""
    context = card.context if "context" not in stages else replace(card.context, stage=stages["context"])
    return replace(card, coarse=stages.get("coarse", card.coarse), fine=stages.get("fine", card.fine),
                   context=context, **fields)


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
        final[stage_name], params[stage_name] = write_stage(folder, stage_name, net, cfg,
                                                            ("torch", "onnx") if onnx else ("torch",), sha)
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


def copy_stage(src: Path, cfg: StageConfig, out: Path, stage_name: str, sha: dict[str, str],
               backends=("torch", "onnx")) -> StageConfig:
    """The weight files of stage `cfg` of the model folder `src` (those of `backends` it has) copied to
    out/<stage_name>.<ext>, their sha256 into `sha`; returns the config naming the copies."""
    files = {}
    for backend, fname in cfg.files.items():
        if backend in backends:
            target = f"{stage_name}.{fname.rsplit('.', 1)[-1]}"
            sha[target] = copy_weight_file(src / fname, out / target)
            files[backend] = target
    return replace(cfg, files=files)


def add_context(model: Path, out: Path, *, net: torch.nn.Module, context: ContextConfig, name: str,
                provenance: dict[str, Any]) -> Path:
    """A model folder `out`: the coarse and fine stages of `model` copied unchanged (sha256-checked) + the context
    stage `net` (config `context`, written in the backends both stages ship), its organ added to the clean-up's
    largest-component organs. Files first, the card last."""
    src = load_model_folder(Path(model), verify=True)
    out = Path(out)
    if src.card.context is not None:
        raise ValueError(f"{model}: the model has a context stage already")
    if out.resolve() == Path(model).resolve():
        raise ValueError(f"{out}: write the model with a context stage to a new folder")
    context.check_fits(src.card.fine)
    backends = tuple(b for b in ("torch", "onnx") if b in src.card.coarse.files and b in src.card.fine.files)
    if not backends:
        raise ValueError(f"{model}: its coarse and fine stages ship no backend in common (torch, onnx)")
    out.mkdir(parents=True, exist_ok=True)
    sha: dict[str, str] = {}
    stages = {n: copy_stage(Path(model), src.card.stage(n), out, n, sha) for n in ("coarse", "fine")}
    stages["context"], n_params = write_stage(out, "context", net, context.stage, backends, sha)
    post = src.card.postprocess
    organs = tuple(sorted(set(post.largest_component_organs) | {context.adds}))
    prov = dict(src.card.provenance) | {"context": {"parameters": n_params, "git_commit": git_commit(),
                                                    **provenance}}
    card = with_stages(replace(src.card, context=context), stages, name=name, sha256=sha, provenance=prov,
                       postprocess=replace(post, largest_component_organs=organs),
                       description=f"{src.card.description}; + a context stage adding label {context.adds} from "
                                   f"the fine labels")
    write_card(card, out)
    load_model_folder(out, verify=True)
    return out


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
    stages = {"coarse": copy_stage(Path(coarse_from), coarse, out, "coarse", sha)}
    for stage_name in src_f.card.stage_names[1:]:   # the fine stage and the context stage that reads its labels
        stages[stage_name] = copy_stage(Path(fine_from), src_f.card.stage(stage_name), out, stage_name, sha)
    prov = {"composed": {"coarse_from": {"name": src_c.card.name, "provenance": src_c.card.provenance},
                         "fine_from": {"name": src_f.card.name, "provenance": src_f.card.provenance},
                         "note": note}}
    card = with_stages(src_f.card, stages, name=name, modalities=modalities, sha256=sha, provenance=prov,
                   description=f"coarse stage of {src_c.card.name} + fine stage of {src_f.card.name}"
                               + (f". {note}" if note else ""))
    write_card(card, out)
    load_model_folder(out, verify=True)
    return out


def with_back_to_input(model: Path, out: Path, *, name: str, back_to_input: str) -> Path:
    """The model folder `model` as a new folder `out` whose fine labels come back to the input grid as
    `back_to_input` says (inference.config.PostprocessConfig): every weight file copied unchanged (sha256-checked),
    the card otherwise the same. Its provenance records the source model and moves the source's benchmark scores
    there (they were measured another way; `training.inplane robust --record` scores this one). Files first, the
    card last."""
    src = load_model_folder(Path(model), verify=True)
    out = Path(out)
    if out.resolve() == Path(model).resolve():
        raise ValueError(f"{out}: write the model to a new folder")
    post = replace(src.card.postprocess, back_to_input=back_to_input)   # validated here, before any file is written
    out.mkdir(parents=True, exist_ok=True)
    sha: dict[str, str] = {}
    stages = {n: copy_stage(Path(model), src.card.stage(n), out, n, sha) for n in src.card.stage_names}
    prov = dict(src.card.provenance)
    # the source's benchmark scores were made with its own way back: kept under the new key, not as this model's
    prov["back_to_input"] = {"from_model": src.card.name, "mode": back_to_input,
                             "from_model_benchmark": prov.pop("benchmark", None)}
    card = with_stages(src.card, stages, name=name, sha256=sha, provenance=prov, postprocess=post,
                       description=f"{src.card.description}; fine labels back to the input grid: {back_to_input}")
    write_card(card, out)
    load_model_folder(out, verify=True)
    return out
