"""Side-by-side benchmark: this project's engine vs nnU-Net v2's nnUNetPredictor (default settings), same network.

    python benchmarks/side_by_side.py --out benchmarks/results/cpu-2core/side_by_side [--device cpu|cuda]
           [--cases N] [--variants tta8,joint]

ONE random-weight PlainConvUNet of nnU-Net's default 3d_fullres size (30.7M parameters: features 32..320, 6 stages,
patch 96x160x160 at 2.5x0.8x0.8 mm, the kernels/strides nnU-Net plans for them) is saved twice:
(a) as an nnU-Net trained-model folder (dataset.json, plans.json with ZScore normalisation and nnU-Net's default
resampling, fold_0/checkpoint_final.pth, mirroring axes 0,1,2) run by benchmarks/nnunet_runner.py (nnUNetPredictor
with its defaults: step 0.5, Gaussian, 8-flip mirroring, predict_from_files);
(b) through training.export.export_model as our weights, with that network as the fine stage at the same spacing,
patch and step, and TTA = all 3 axes mode "all" (8 passes) -- variant "tta8", like for like -- plus a small coarse
net (the engine benchmark's); variant "joint" is the same with our default joint TTA (2 passes over axes 1,2).
Each case runs alone in a fresh process (eval.resources.measure_folder: wall time, process-tree RSS, GPU memory
when NVML sees a GPU). Random weights: our coarse stage (biased towards organs, like engine_benchmark) marks nearly
everything, so our ROI is about the whole image and the fine stage does the same work as nnU-Net.
Writes results.csv, results.md and time_per_case.png into --out (temporary names, then renamed).
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.engine_benchmark import machine_description, seed_size_stages  # noqa: E402
from eval.resources import ResourceConfig, measure_folder  # noqa: E402
from inference.atomic import atomic_path, write_text  # noqa: E402
from inference.config import TTA, Architecture, Normalization, RoiConfig, StageConfig  # noqa: E402
from training.c2f.planner import architecture_plans  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
NUM_CLASSES = 14
FULLRES_SPACING = (2.5, 0.8, 0.8)
FULLRES_PATCH = (96, 160, 160)
FULLRES_ARCH = Architecture(
    1, 6, (32, 64, 128, 256, 320, 320), ((1, 3, 3),) + ((3, 3, 3),) * 5,
    ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2)), (2,) * 6, (2,) * 5)
TTA_VARIANTS = {"tta8": TTA(axes=(0, 1, 2), mode="all"), "joint": TTA(axes=(1, 2), mode="joint")}
# small real MR volumes (the engine serves MRI and PET, not CT), cropped (x, y, z start/size in voxels) so that each fits ONE 96x160x160 window at 2.5x0.8x0.8:
# a 30.7M net takes ~28 s per pass on 2 CPU cores, 8 passes per window
CASES = [
    ("ts_mr_sm_crop", REAL / "totalseg_examples" / "images" / "ts_mr_sm_0000.nii.gz", (38, 25, 0), (40, 40, 20)),
    ("chaos_t2_33_crop", REAL / "mr_chaos_t2" / "images" / "chaos_t2_33_0000.nii.gz", (80, 80, 11), (96, 96, 12)),
    ("chaos_t2_34_crop", REAL / "mr_chaos_t2" / "images" / "chaos_t2_34_0000.nii.gz", (80, 80, 11), (96, 96, 12)),
]


def fine_stage(arch: Architecture, spacing, patch, tta: TTA) -> StageConfig:
    return StageConfig(spacing_mm=tuple(spacing), patch_size=tuple(patch), normalization=Normalization("zscore", (0.5, 99.5)),
                       architecture=arch, label_ids=tuple(range(NUM_CLASSES)), tta=tta, step_size=0.5)


def plans_dict(*, dataset_name: str, plans_name: str, planner: str, arch: Architecture, spacing, patch_size,
               median_shape, batch_size: int, normalization: str, batch_dice: bool,
               intensity_properties: dict[str, Any]) -> dict[str, Any]:
    """An nnU-Net v2 plans dict with one 3d_fullres configuration (identity transpose, nnU-Net's resampling), as
    nnU-Net's default planner writes it for a trained model folder (the comparison model is built, not trained)."""
    spacing = [float(s) for s in spacing]
    median_shape = [int(v) for v in median_shape]
    config = {
        "data_identifier": f"{plans_name}_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": [int(p) for p in patch_size],
        "median_image_size_in_voxels": median_shape,
        "spacing": spacing,
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": architecture_plans(arch),
        "batch_dice": batch_dice,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": median_shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": planner,
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity_properties,
    }


def nnunet_plans(arch: Architecture, spacing, patch) -> dict:
    """A plans.json like nnU-Net's default planner writes (3d_fullres only), for `arch` at `spacing`/`patch`."""
    return plans_dict(
        dataset_name="Dataset999_SideBySide", plans_name="nnUNetPlans", planner="ExperimentPlanner", arch=arch,
        spacing=spacing, patch_size=patch, median_shape=patch, batch_size=2, normalization="ZScoreNormalization",
        batch_dice=True, intensity_properties={"0": {
            "max": 1000.0, "mean": 100.0, "median": 100.0, "min": 0.0, "percentile_00_5": 0.0,
            "percentile_99_5": 900.0, "std": 100.0}})


def write_nnunet_model(folder: Path, net, arch: Architecture, spacing, patch) -> Path:
    """nnU-Net trained-model folder for `net` (nnUNetTrainer, 3d_fullres, fold 0, mirroring axes 0,1,2)."""
    import torch

    folder = Path(folder)
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    labels = {"background": 0, **{f"organ{i}": i for i in range(1, NUM_CLASSES)}}
    (folder / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}, indent=2))
    (folder / "plans.json").write_text(json.dumps(nnunet_plans(arch, spacing, patch), indent=2))
    ckpt = {"network_weights": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "trainer_name": "nnUNetTrainer", "init_args": {"configuration": "3d_fullres", "fold": 0},
            "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0}
    with atomic_path(folder / "fold_0" / "checkpoint_final.pth") as tmp:
        torch.save(ckpt, tmp)
    return folder


def build_models(folder: Path, arch: Architecture = FULLRES_ARCH, spacing=FULLRES_SPACING, patch=FULLRES_PATCH,
                 coarse: tuple | None = None, variants=("tta8",), onnx: bool = True, seed: int = 0) -> dict[str, Path]:
    """ONE random fine network saved as an nnU-Net model and as our weights (one weights folder per TTA variant).

    Returns {"nnunet": model folder, "ours_<variant>": weights folder (holding one model folder)}.
    `coarse` = (Architecture, spacing, patch) of our coarse stage (default: engine_benchmark's coarse).
    """
    import torch

    from inference.network import build_network, count_parameters
    from training.export import export_model

    torch.manual_seed(seed)
    net = build_network(arch, NUM_CLASSES)
    if coarse is None:
        c = seed_size_stages()[0]
    else:
        c = StageConfig(spacing_mm=tuple(coarse[1]), patch_size=tuple(coarse[2]), normalization=Normalization("zscore", (0.5, 99.5)),
                        architecture=coarse[0], label_ids=tuple(range(NUM_CLASSES)), tta=TTA(), step_size=0.5)
    coarse_net = build_network(c.architecture, NUM_CLASSES)
    with torch.no_grad():  # the random coarse net then marks organs nearly everywhere: ROI ~ whole image
        coarse_net.decoder.seg_layers[-1].bias[1:] += 0.5
    out = {"nnunet": write_nnunet_model(Path(folder) / "nnunet_model", net, arch, spacing, patch)}
    for v in variants:
        weights = Path(folder) / f"ours_{v}"
        export_model(weights / f"side_by_side_{v}", name=f"side_by_side_{v}",
                     description=f"RANDOM weights, nnU-Net 3d_fullres size ({count_parameters(net) / 1e6:.1f}M), "
                                 f"TTA {v}; side-by-side benchmark only, never ship",
                     modalities=("MRI", "PET"), stages={"coarse": (coarse_net, c),
                                                              "fine": (net, fine_stage(arch, spacing, patch, TTA_VARIANTS[v]))},
                     provenance={"training": "none (benchmark)"}, onnx=onnx, roi=RoiConfig(margin_mm=(20.0, 20.0, 20.0)))
        out[f"ours_{v}"] = weights
    return out


def commands(models: dict[str, Path], device: str) -> dict[str, str]:
    """{tool: measure_folder command template} for every model of build_models."""
    py = shlex.quote(sys.executable)
    cmds = {}
    for tool, path in models.items():
        if tool == "nnunet":
            cmds["nnunet_predictor"] = (f"{py} {shlex.quote(str(ROOT / 'benchmarks' / 'nnunet_runner.py'))} {{inputs}} "
                                        f"{{outputs}} --model {shlex.quote(str(path))} --device {device}")
        else:
            cmds[tool] = f"{py} -m inference {{inputs}} {{outputs}} --weights {shlex.quote(str(path))} --device {device}"
    return cmds


def prepare_cases(inputs: Path, n: int) -> dict[str, str]:
    """Write the first `n` cropped cases into `inputs`; {input name: size xyz}."""
    inputs.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for case, path, start, size in CASES[:n]:
        img = sitk.ReadImage(str(path))
        size = [min(s, n_ - a) for s, a, n_ in zip(size, start, img.GetSize(), strict=True)]
        crop = sitk.RegionOfInterest(img, size, list(start))
        name = f"{case}_0000.nii.gz"
        sitk.WriteImage(crop, str(inputs / name), True)
        sizes[name] = "x".join(map(str, crop.GetSize()))
    return sizes


def run_tools(cmds: dict[str, str], inputs: Path, work: Path, sizes: dict[str, str], timeout_s: float | None = None) -> list[dict]:
    rows = []
    for tool, command in cmds.items():
        results = measure_folder(ResourceConfig(input_dir=inputs, out_dir=work / tool, command=command, cwd=ROOT,
                                                timeout_s=timeout_s), plots=False)
        for m in results:
            rows.append({"tool": tool, "case": m.case, "size": sizes.get(m.input_name, ""),
                         "ok": m.returncode == 0 and m.output_written, "time_s": round(m.time_s, 2),
                         "max_rss_mb": round(m.max_tree_rss_mb, 1),
                         "max_gpu_mib": m.max_gpu_mib if m.gpu_measured else "",
                         "auc_gpu": m.auc_gpu_mib_s if m.gpu_measured else "",
                         "prediction": str(work / tool / "predictions" / f"{m.case}.nii.gz")})
            print(f"{tool} {m.case}: {rows[-1]['time_s']} s, ok={rows[-1]['ok']}", flush=True)
    return rows


FIELDS = ("tool", "case", "size", "time_s", "max_rss_mb", "max_gpu_mib", "auc_gpu")


def _replace_text(path: Path, text: str) -> None:
    write_text(path, text)


def write_results(out: Path, rows: list[dict], device: str, started: float, elapsed: float, variants) -> None:
    import io

    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    _replace_text(out / "results.csv", buf.getvalue())

    md = [f"# Side by side: our engine vs nnU-Net v2 nnUNetPredictor ({device})", "",
          f"Machine: {machine_description(device)}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
          f"{elapsed:.0f} s in all. Command: `python benchmarks/side_by_side.py --device {device} "
          f"--cases {len({r['case'] for r in rows})} --variants {','.join(variants)}`.", "",
          "Settings: ONE random-weight PlainConvUNet of nnU-Net's default 3d_fullres size (30.7M parameters, features "
          "32-64-128-256-320-320, 6 stages), patch 96x160x160 at 2.5x0.8x0.8 mm, step 0.5, Gaussian weighting. "
          "`nnunet_predictor`: nnUNetPredictor with default settings (8-flip mirroring, predict_from_files, default "
          "worker counts, ZScore normalisation, nnU-Net's default resampling) through benchmarks/nnunet_runner.py. "
          "`ours_tta8`: `python -m inference` with that network as the fine stage, TTA all 3 axes mode all (8 passes), "
          "plus a 1.1M-parameter coarse stage at 6 mm (the engine benchmark's)"
          + ("; `ours_joint`: the same with our default joint TTA (2 passes over axes y, x)" if "joint" in variants else "")
          + ". One fresh process per case and tool (eval.resources: wall time incl. imports and model load, "
          "process-tree peak RSS, summed over the tree's processes, so nnU-Net's worker processes add their shared "
          "pages; GPU columns empty when NVML sees no GPU).", "",
          "Cases: small real volumes cropped so that each fits one 96x160x160 window at the fine spacing "
          "(a 30.7M-parameter forward pass takes ~28 s on this 2-core CPU).", "",
          "| " + " | ".join(FIELDS) + " | ok |", "|" + "---|" * (len(FIELDS) + 1)]
    md += ["| " + " | ".join(str(r[k]) for k in FIELDS) + f" | {r['ok']} |" for r in rows]
    md += ["", "What differs: the network, spacing, patch, step, Gaussian and 8-flip TTA are the same; our engine "
           "also runs its coarse stage (whose ROI is nearly the whole image here, because the weights are random and "
           "biased towards organs -- with trained weights the ROI is the organ box and the fine stage sees less), "
           "normalises with percentile-clipped z-score instead of nnU-Net's plain z-score, resamples with its own "
           "code, runs the network with ONNX Runtime (the engine's `--backend auto` when the card ships ONNX and "
           "onnxruntime imports; nnU-Net runs PyTorch, fp32 on the CPU), and runs in one process where nnU-Net's "
           "predict_from_files starts preprocessing/export workers. "
           "Random weights: the masks are meaningless; only time and memory count."]
    _replace_text(out / "results.md", "\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = list(dict.fromkeys(r["tool"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(cases) * max(1, len(tools)) / 2, 4))
    width = 0.8 / max(1, len(tools))
    for i, tool in enumerate(tools):
        t = {r["case"]: float(r["time_s"]) for r in rows if r["tool"] == tool}
        xs = np.arange(len(cases)) + (i - (len(tools) - 1) / 2) * width
        bars = ax.bar(xs, [t.get(c, 0) for c in cases], width, label=tool)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(np.arange(len(cases)), cases, fontsize=8)
    ax.set_ylabel("wall time per case (s)")
    ax.set_title(f"30.7M-parameter 3d_fullres-size net, {device}: {machine_description(device)[:60]}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / "time_per_case.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu-2core" / "side_by_side")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--cases", type=int, default=len(CASES), help=f"first N of the {len(CASES)} cropped cases")
    p.add_argument("--variants", default="tta8", help="comma list of our TTA variants: tta8 (like for like), joint")
    p.add_argument("--timeout", type=float, default=None, help="seconds per case and tool")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="flare_side_by_side_"))
    models = build_models(work / "models", variants=variants)
    sizes = prepare_cases(work / "inputs", args.cases)
    rows = run_tools(commands(models, args.device), work / "inputs", work / "runs", sizes, args.timeout)
    write_results(args.out, rows, args.device, started, time.time() - started, variants)
    print((args.out / "results.md").read_text())
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
