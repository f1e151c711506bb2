"""``python -m eval score PRED_DIR LABEL_DIR --csv OUT.csv [--modality mri|pet] [--organs 1,2,3,13] [--strict-geometry]``
``python -m eval resources INPUT_DIR --out-dir DIR (--docker-image NAME | --command "sh predict.sh {inputs} {outputs}") [--gpu-index 0]``

Exit status: 0 on success; 1 for a usage error (missing folder, bad option);
2 when ``score`` could not read a label file or ``--strict-geometry`` refused a prediction,
or when ``resources`` saw a run fail (non-zero exit or no output written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _organ_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated organ ids such as 1,2,3,13, got {text!r}") from error
    if not values:
        raise argparse.ArgumentTypeError("empty organ list")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="DSC/NSD per case x organ as the FLARE 2024 Task 2/3 scorer")
    score.add_argument("pred_dir", type=Path, help="folder of <case>.nii.gz predictions")
    score.add_argument("label_dir", type=Path, help="folder of <case>.nii.gz reference label maps")
    score.add_argument("--csv", type=Path, required=True, help="output CSV (case, organ, dsc, nsd)")
    score.add_argument("--modality", choices=("mri", "pet"), default="mri", help="mri: 13 organs; pet: 1 liver, 2 right kidney, 3 spleen, 4 left kidney")
    score.add_argument("--organs", type=_organ_list, default=None, help="score only these organ ids, e.g. 1,2,3,13 for CHAOS labels")
    score.add_argument("--strict-geometry", action="store_true", help="refuse predictions whose shape, spacing, origin or direction differ from the label's")
    score.add_argument("--geometry-atol-mm", type=float, default=1e-3, help="tolerance of the --strict-geometry affine comparison (default 1e-3)")
    score.add_argument("--no-plots", action="store_true", help="skip the box-plot PNG")

    resources = commands.add_parser("resources", help="organizers' per-case time / GPU memory / AUC measurement")
    resources.add_argument("input_dir", type=Path, help="folder of <case>_0000.nii.gz inputs")
    resources.add_argument("--out-dir", type=Path, required=True)
    how = resources.add_mutually_exclusive_group(required=True)
    how.add_argument("--docker-image", help="image run with the organizers' docker command (sh predict.sh inside)")
    how.add_argument("--command", help='shell command template, e.g. "sh predict.sh {inputs} {outputs}" ({case}, {gpu} also available)')
    resources.add_argument("--no-gpus", action="store_true", help="docker mode: leave out --gpus (a machine without a GPU runtime; the organizers always pass it)")
    resources.add_argument("--gpu-index", type=int, default=0, help="NVML (nvidia-smi) index of the GPU to use and sample")
    resources.add_argument("--cwd", type=Path, default=None, help="working directory of --command (default: current)")
    resources.add_argument("--timeout-s", type=float, default=None, help="kill a run after this many seconds (default: none)")
    resources.add_argument("--pause-s", type=float, default=0.0, help="sleep between cases (the organizers wait about 7 s)")
    resources.add_argument("--interval-s", type=float, default=0.1, help="sampling sleep (AUC always assumes 0.1 s per sample, as the organizers)")
    resources.add_argument("--work-dir", type=Path, default=None, help="where the temporary per-case inputs/outputs folders are made")
    resources.add_argument("--cases", default=None, help="comma-separated input file names to run (default: all)")
    resources.add_argument("--no-plots", action="store_true", help="skip the per-case curve PNGs")
    return parser


def main(argv: list[str] | None = None) -> int:
    # each command's typed config is built field by field from its arguments: blocks of the same shape (keyword
    # = argument), different fields; a generic mapping would hide which argument feeds which setting
    args = build_parser().parse_args(argv)
    if args.command == "score":
        from .score import ScoreConfig, score_folders, write_outputs

        config = ScoreConfig(
            pred_dir=args.pred_dir,
            label_dir=args.label_dir,
            csv_path=args.csv,
            modality=args.modality,
            organ_ids=args.organs,
            strict_geometry=args.strict_geometry,
            geometry_atol_mm=args.geometry_atol_mm,
            plots=not args.no_plots,
        )
        try:
            report = score_folders(config)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        written = write_outputs(config, report)
        print("wrote " + ", ".join(str(p) for p in written.values()))
        return 2 if report.failed else 0

    from .resources import ResourceConfig, measure_folder

    config = ResourceConfig(
        input_dir=args.input_dir,
        out_dir=args.out_dir,
        docker_image=args.docker_image,
        command=args.command,
        gpu_index=args.gpu_index,
        docker_gpus=not args.no_gpus,
        interval_s=args.interval_s,
        cwd=args.cwd,
        timeout_s=args.timeout_s,
        pause_s=args.pause_s,
        work_dir=args.work_dir,
        cases=tuple(c.strip() for c in args.cases.split(",") if c.strip()) if args.cases else None,
    )
    try:
        results = measure_folder(config, plots=not args.no_plots)
    except (FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if all(m.returncode == 0 and m.output_written for m in results) else 2


if __name__ == "__main__":
    sys.exit(main())
