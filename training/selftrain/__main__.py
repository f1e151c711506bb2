"""Command line of the self-training pseudo-label pipeline.

    python -m training.selftrain stats   --ct-labels DIR [DIR ...] --out stats.json
    python -m training.selftrain predict --images DIR --weights DIR --models best,second[,extra...] --out PRED
                                         (--stats stats.json | --native-spacing) [--shard K/N] [--modality auto|mri|pet]
                                         [--device auto|cpu|cuda] [--backend auto|torch|onnx] [--threads N]
    python -m training.selftrain filter  --predictions PRED --stats stats.json --modality mri|pet --out OUT
                                         [--scan-modality mri|pet]
                                         [--top-k K] [--dice-threshold T] [--n-sigma 3] [--images DIR]
                                         [--no-majority-label 0] [--overwrite]
    python -m training.selftrain table   OUT [OUT ...] [--out table4.md]

Exit codes: 0 success; 1 some cases failed (predict); 2 the command could not run (the message names the file).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.atomic import write_text

from .filtering import FilterConfig, FilterError, format_table4, load_table4, run_filter
from .labels import ORGAN_SETS
from .predict import MODALITY_CHOICES, PredictConfig, PredictError, parse_shard, run_predict
from .stats import StatsError, compute_stats, load_stats, save_stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.selftrain", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stats", help="median spacing and relative-volume statistics of the labelled CT")
    s.add_argument("--ct-labels", type=Path, required=True, nargs="+",
                   help="folder(s) of label maps <case>.nii.gz (e.g. the labelled CT and the FLARE22 maps)")
    s.add_argument("--out", type=Path, required=True, help="statistics file to write (JSON)")

    q = sub.add_parser("predict", help="pseudo-labels of every model for the unlabelled scans (sharded, resumable)")
    q.add_argument("--images", type=Path, required=True, help="folder of <case>_0000.nii.gz scans")
    q.add_argument("--weights", type=Path, required=True, help="folder holding the model folders")
    q.add_argument("--models", required=True,
                   help="comma-separated model folders, best first, then second-best, then extra ensemble members "
                        "(names under --weights or paths)")
    q.add_argument("--out", type=Path, required=True, help="predictions folder")
    grid = q.add_mutually_exclusive_group(required=True)
    grid.add_argument("--stats", type=Path, help="resample each scan to this file's CT median spacing first")
    grid.add_argument("--native-spacing", action="store_true", help="predict on each scan's own grid")
    q.add_argument("--shard", default="1/1", help="K/N: process shard K (1..N) of N (default 1/1)")
    q.add_argument("--modality", choices=MODALITY_CHOICES, default="auto",
                   help="engine modality; auto: PET when the name contains fdg/psma/pet, else MRI")
    q.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    q.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto")
    q.add_argument("--threads", type=int, default=None)

    f = sub.add_parser("filter", help="stage 1 + stage 2 filtering into a training-ready folder")
    f.add_argument("--predictions", type=Path, required=True, help="predictions folder of `predict`")
    f.add_argument("--stats", type=Path, required=True, help="statistics file of `stats`")
    f.add_argument("--modality", choices=("mri", "pet", "mri_large"), required=True,
                   help="target set to filter (mri_large: 9 large BTCV organs, on MRI scans)")
    f.add_argument("--scan-modality", choices=("mri", "pet"), default=None,
                   help="modality of the scans whose records are read (default: the set's own; e.g. --modality "
                        "pet --scan-modality mri keeps the four PET organs of MRI predictions)")
    f.add_argument("--out", type=Path, required=True, help="training-ready output folder")
    f.add_argument("--top-k", type=int, default=None, help="keep at most K cases (default: all above threshold)")
    f.add_argument("--dice-threshold", type=float, default=None, help="default 0.9 (mri), 0.82 (pet)")
    f.add_argument("--n-sigma", type=float, default=3.0, help="relative-volume interval mu +- n_sigma*sigma")
    f.add_argument("--min-voxels", type=int, default=1, help="voxels an organ needs to count as present")
    f.add_argument("--images", type=Path, default=None,
                   help="folder of the source scans, when predictions were made natively and have moved")
    f.add_argument("--no-majority-label", type=int, default=0,
                   help="label of voxels without a strict majority (0: background; e.g. 14 = nnU-Net ignore)")
    f.add_argument("--overwrite", action="store_true", help="replace an earlier filter run in --out")
    for cmd in (q, f):   # options the commands share, each the last of its command's list (as --help shows them)
        cmd.add_argument("--compression", type=int, default=1, choices=range(0, 10), metavar="0-9")
    for cmd in (s, q, f):
        cmd.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("table", help="print Table 4 for several filter outputs (one row per target set)")
    t.add_argument("outputs", type=Path, nargs="+", help="filter output folders or their table4.json files")
    t.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    return p


def _say(msg: str) -> None:
    print(msg, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "stats":
            stats = compute_stats(args.ct_labels, progress=not args.no_progress)
            save_stats(stats, args.out)
            _say(f"{stats.n_label_maps} CT label maps; median spacing (x, y, z) "
                 f"{tuple(round(v, 4) for v in stats.median_spacing_xyz_mm)} mm")
            for name in ORGAN_SETS:
                _say(f"  {name}: statistics over {stats.sets[name].n_cases} complete maps" if name in stats.sets
                     else f"  {name}: no statistics (fewer than two maps carry all of its organs)")
            _say(f"written {args.out}")
            return 0
        if args.command == "predict":
            spacing = None if args.native_spacing else load_stats(args.stats).median_spacing_xyz_mm
            cfg = PredictConfig(images=args.images, weights_dir=args.weights,
                                models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
                                out=args.out, target_spacing_xyz_mm=spacing, shard=parse_shard(args.shard),
                                modality=args.modality, device=args.device, backend=args.backend,
                                threads=args.threads, compression=args.compression, progress=not args.no_progress)
            summary = run_predict(cfg)
            for case, reason in summary.failed.items():
                _say(f"FAILED {case}: {reason}")
            _say(f"shard {cfg.shard[0]}/{cfg.shard[1]}: {len(summary.shard_cases)} cases, "
                 f"{len(summary.predicted)} predicted, {len(summary.skipped)} already finished, "
                 f"{len(summary.failed)} failed")
            return 1 if summary.failed else 0
        if args.command == "filter":
            cfg = FilterConfig(predictions=args.predictions, stats=args.stats, target_set=args.modality,
                               out=args.out, scan_modality=args.scan_modality, top_k=args.top_k,
                               dice_threshold=args.dice_threshold, n_sigma=args.n_sigma, min_voxels=args.min_voxels,
                               images=args.images, no_majority_label=args.no_majority_label, overwrite=args.overwrite,
                               compression=args.compression, progress=not args.no_progress)
            row, _, manifest = run_filter(cfg)
            _say(format_table4([row]))
            _say(f"{manifest['numTraining']} pseudo-labelled cases written to {args.out}")
            return 0
        # args.command == "table": argparse accepts no other subcommand
        text = format_table4([load_table4(p) for p in args.outputs])
        _say(text)
        if args.out is not None:
            write_text(args.out, text + "\n")
        return 0
    except (StatsError, PredictError, FilterError) as exc:
        _say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
