"""Engine benchmark: time per stage and peak memory per case, a fresh process per case (the organizers' way).

    python benchmarks/engine_benchmark.py --out benchmarks/results/cpu-2core [--device cpu|cuda]
           [--backend onnx|torch] [--sets real,table6,reslice] [--limit N] [--weights DIR] [--models A,B]

Cases: every real volume of ../shared/data/real and synthetic MR-like volumes of the seed paper's Table-6 sizes.
Each case runs `python -m inference` alone in fresh inputs/outputs folders, measured by `eval.resources`
(wall time around the process, process-tree RSS, whole-device GPU memory every 0.1 s when NVML sees a GPU);
per-stage seconds come from the engine's QC record. Without --weights, a network of the seed's size with RANDOM
weights is built in the output folder (the timing does not depend on the weight values; it is never shipped).
`--models A,B` runs every case with each named model of --weights, one after the other in the same run (a change
and its baseline side by side). The `reslice` set: the four CHAOS T2 test scans resliced into thick coronal and
sagittal slices (eval.reslice), the acquisition geometry that makes an in-plane engine run hundreds of slices.
Writes results.csv and results.md (with the machine) into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.resources import ResourceConfig, measure_folder  # noqa: E402
from eval.phantoms import synthetic_mr  # noqa: E402
from inference.atomic import write_csv  # noqa: E402
from inference.config import TTA, Architecture, Normalization, RoiConfig, StageConfig  # noqa: E402
from training.machine import cpu_name  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
TABLE6_XYZ = [(192, 192, 100), (256, 256, 80), (320, 290, 72), (400, 400, 115), (432, 432, 40), (512, 152, 512),
              (576, 468, 72), (1024, 1024, 82), (400, 400, 92), (200, 200, 121)]


def seed_size_stages() -> tuple[StageConfig, StageConfig]:
    """Coarse 1.1M and fine 4.6M parameter PlainConvUNets: the seed paper's size class (4-7M, 96x192x192)."""
    coarse = StageConfig(
        spacing_mm=(6.0, 6.0, 6.0), patch_size=(64, 64, 64), normalization=Normalization("zscore", (0.5, 99.5)),
        architecture=Architecture(1, 5, (8, 16, 32, 64, 96), ((3, 3, 3),) * 5,
                                  ((1, 1, 1),) + ((2, 2, 2),) * 4, (2,) * 5, (2,) * 4),
        label_ids=tuple(range(14)), tta=TTA(), step_size=0.5)
    fine = StageConfig(
        spacing_mm=(2.5, 1.5, 1.5), patch_size=(96, 192, 192), normalization=Normalization("zscore", (0.5, 99.5)),
        architecture=Architecture(1, 5, (16, 32, 64, 128, 192), ((1, 3, 3),) + ((3, 3, 3),) * 4,
                                  ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)), (2,) * 5, (2,) * 4),
        label_ids=tuple(range(14)), tta=TTA(axes=(1, 2), mode="joint"), step_size=0.5)
    return coarse, fine


def build_benchmark_weights(folder: Path) -> Path:
    import torch

    from inference.network import build_network
    from training.export import export_model

    torch.manual_seed(0)
    coarse, fine = seed_size_stages()
    stages = {}
    for name, cfg in (("coarse", coarse), ("fine", fine)):
        net = build_network(cfg.architecture, cfg.num_classes)
        with torch.no_grad():  # make random nets predict organs so the ROI and clean-up paths are exercised
            net.decoder.seg_layers[-1].bias[1:] += 0.5
        stages[name] = (net, cfg)
    export_model(folder / "benchmark_seed_size", name="benchmark_seed_size",
                 description="RANDOM weights of the seed's size, for timing only; never ship",
                 modalities=("MRI", "PET"), stages=stages, provenance={"training": "none (benchmark)"},
                 roi=RoiConfig(margin_mm=(20.0, 20.0, 20.0)))
    return folder


ORGAN_ROI_CASES = ["chaos_t2_33", "chaos_t2_34", "chaos_t2_37", "chaos_t2_38"]


def organ_roi_crop(image_path: Path, label_path: Path, margin_mm: float = 20.0) -> sitk.Image:
    """The image cropped to the box of its manual organ labels + margin (geometry kept)."""
    img, lab = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    arr = sitk.GetArrayViewFromImage(lab) > 0
    nz = np.argwhere(arr)
    lo, hi = nz.min(axis=0)[::-1], nz.max(axis=0)[::-1] + 1  # x, y, z
    pad = [int(np.ceil(margin_mm / s)) for s in img.GetSpacing()]
    lo = [max(0, int(v) - m) for v, m in zip(lo, pad, strict=True)]
    hi = [min(n, int(v) + m) for v, m, n in zip(hi, pad, img.GetSize(), strict=True)]
    return sitk.RegionOfInterest(img, [h - l for l, h in zip(lo, hi, strict=True)], lo)


def machine_description(device: str) -> str:
    desc = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if device == "cuda":
        try:
            name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20).stdout.strip()
            desc += f", GPU {name}"
        except (OSError, subprocess.SubprocessError):
            desc += ", GPU (name unknown)"
    return desc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    p.add_argument("--sets", default="real,table6",
                   help="comma list of real, table6, organ_roi (CHAOS test cases cropped to their manual organ box "
                        "+ 20 mm: what a trained coarse stage hands the fine stage), reslice (coronal / sagittal "
                        "reslices of the CHAOS test scans)")
    p.add_argument("--limit", type=int, default=None, help="at most N cases per set")
    p.add_argument("--match", default=None, help="only real cases whose file name matches this regular expression")
    p.add_argument("--weights", type=Path, default=None, help="weights folder (default: seed-size random model)")
    p.add_argument("--models", default=None, help="comma list of model folders of --weights: each case with each")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-tta", action="store_true", help="pass --no-tta to the engine")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="flare_bench_"))
    weights = args.weights or build_benchmark_weights(work / "weights")
    inputs = work / "inputs"
    inputs.mkdir()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    size_of: dict[str, str] = {}
    if "real" in sets:
        real = [p for p in sorted(REAL.glob("*/images/*_0000.nii.gz")) if not args.match or re.search(args.match, p.name)]
        for path in real[: args.limit]:
            os.symlink(path, inputs / path.name)
            size_of[path.name] = "x".join(str(s) for s in sitk.ReadImage(str(path)).GetSize())
    if "organ_roi" in sets:
        for case in ORGAN_ROI_CASES:
            name = f"{case.replace('chaos_t2', 'chaosroi')}_0000.nii.gz"
            img = organ_roi_crop(REAL / "mr_chaos_t2" / "images" / f"{case}_0000.nii.gz",
                                 REAL / "mr_chaos_t2" / "labels" / f"{case}.nii.gz")
            sitk.WriteImage(img, str(inputs / name), True)
            size_of[name] = "x".join(str(s) for s in img.GetSize())
    if "reslice" in sets:
        from eval.reslice import make_reslice_set

        made = make_reslice_set([REAL / "mr_chaos_t2" / "images" / f"{c}_0000.nii.gz" for c in ORGAN_ROI_CASES],
                                REAL / "mr_chaos_t2" / "labels", work / "reslice")
        for path in made[: args.limit]:
            os.symlink(path, inputs / path.name)
            size_of[path.name] = "x".join(str(s) for s in sitk.ReadImage(str(path)).GetSize())
    if "table6" in sets:
        for i, size in enumerate(TABLE6_XYZ[: args.limit]):
            name = f"table6_{size[0]}x{size[1]}x{size[2]}_0000.nii.gz"
            sitk.WriteImage(synthetic_mr(size, seed=i), str(inputs / name), True)
            size_of[name] = "x".join(map(str, size))
    t0 = time.time()
    rows = []
    for model in [m for m in (args.models or "").split(",") if m] or [None]:
        qc = work / "qc" / (model or "default")
        command = (f"{shlex.quote(sys.executable)} -m inference {{inputs}} {{outputs}} --weights {shlex.quote(str(weights))} "
                   f"--device {args.device} --backend {args.backend} --log-dir {shlex.quote(str(qc))}"
                   + (f" --model {shlex.quote(model)}" if model else "")
                   + (f" --threads {args.threads}" if args.threads else "") + (" --no-tta" if args.no_tta else ""))
        results = measure_folder(ResourceConfig(input_dir=inputs, out_dir=work / "resources" / (model or "default"),
                                                command=command, cwd=ROOT), plots=False)
        for m in results:
            case = m.input_name[: -len("_0000.nii.gz")]
            rec_path = qc / f"{case}.json"
            rec = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
            sec = rec.get("seconds", {})
            rows.append({
                "case": case, "model": rec.get("model", model or ""), "size_xyz": size_of.get(m.input_name, ""),
                "ok": m.returncode == 0 and m.output_written,
                "time_s": round(m.time_s, 2), "engine_total_s": sec.get("total", ""),
                "read_s": sec.get("read", ""), "load_model_s": sec.get("load_model", ""), "coarse_s": sec.get("coarse", ""),
                "fine_s": sec.get("fine", ""), "context_s": sec.get("context", ""),
                "postprocess_s": sec.get("postprocess", ""), "write_s": sec.get("write", ""),
                "coarse_shape_zyx": "x".join(map(str, rec.get("coarse_shape_zyx", []))),
                "fine_shape_zyx": "x".join(map(str, rec.get("fine_shape_zyx", []))),
                "max_rss_mb": round(m.max_tree_rss_mb, 1),
                "max_gpu_mib": m.max_gpu_mib if m.gpu_measured else "", "auc_gpu_mib_s": m.auc_gpu_mib_s if m.gpu_measured else "",
            })
    fields = list(rows[0].keys())
    write_csv(args.out / "results.csv", fields, [[r[k] for k in fields] for r in rows])
    by_model: dict[str, list[float]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r["time_s"])
    lines = [f"# Engine benchmark ({args.device}, {args.backend}{', no TTA' if args.no_tta else ''})", "",
             f"Machine: {machine_description(args.device)}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, "
             f"{time.time() - t0:.0f} s in all. Weights: {'given' if args.weights else 'seed-size random (coarse 1.1M, fine 4.6M parameters; fine patch 96x192x192, joint mirror TTA)'}.",
             "One fresh process per case; time = wall clock around the process (imports, model load, read, segment, write).",
             "", "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(r[k]) for k in fields) + " |" for r in rows]
    lines += [""] + [f"{name or 'model'}: median time {np.median(t):.2f} s, max {np.max(t):.2f} s over {len(t)} cases."
                     for name, t in by_model.items()]
    lines += [f"Max RSS {max(r['max_rss_mb'] for r in rows):.0f} MB."]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
