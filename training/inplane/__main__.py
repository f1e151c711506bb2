"""python -m training.inplane train|export|curves ... (see training/inplane/README.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import protocol
from .recipe import load_profile


def _stage_dir(work: Path, row: str, stage: str) -> Path:
    # one coarse stage serves every row of a profile (trained on the source CT with row A's randomisation)
    return work / "coarse" if stage == "coarse" else work / "rows" / row / "fine"


def cmd_train(args) -> int:
    from .data import SliceBank, load_volumes
    from .loop import train_stage

    prof = load_profile(args.profile)
    row_name = prof.coarse_row if args.stage == "coarse" else args.row
    if row_name not in prof.rows:
        print(f"error: profile {prof.name} has no row {row_name!r} (rows: {sorted(prof.rows)})", file=sys.stderr)
        return 2
    row = prof.rows[row_name]
    recipe = prof.coarse if args.stage == "coarse" else prof.fine
    if args.threads:
        recipe = type(recipe)(**{**recipe.__dict__, "threads": args.threads})
    cases, label_ids = protocol.source_cases(row.source, args.data)
    missing = [str(c.image) for c in cases if not c.image.is_file() or not c.label.is_file()]
    if missing:
        print(f"error: {len(missing)} training case(s) missing, e.g. {missing[0]}", file=sys.stderr)
        return 2
    out = _stage_dir(args.work, row_name, args.stage)
    vols = load_volumes(cases, recipe.spacing_mm, label_ids)
    evals = load_volumes(protocol.test_cases(args.data), recipe.spacing_mm, protocol.CHAOS_LABELS) \
        if args.curve_on_test else []
    train_stage(out, SliceBank(vols), recipe, prof.spatial, row.appearance, label_ids, evals,
                protocol.SCORED_ORGANS if evals else (), seed=prof.seed, device=args.device)
    print(f"trained {out}")
    return 0


def cmd_export(args) -> int:
    from .export import export_row

    export_row(args.work, args.profile, args.row, args.out, name=args.name or args.out.name)
    print(f"exported {args.out}")
    return 0


def cmd_score(args) -> int:
    from .report import row_summary, score

    csv_path = score(args.model, args.out, args.data, args.threads)
    e = row_summary(csv_path)
    print(f"{args.model.name}: mean DSC {100 * e['mean'][0]:.1f} %, NSD {100 * e['mean'][1]:.1f} % "
          + " ".join(f"{o}:{100 * e[o][0]:.1f}" for o in protocol.SCORED_ORGANS) + f" ({csv_path})")
    return 0


def cmd_curves(args) -> int:
    from .report import plot_curves

    plot_curves(args.work, args.out)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.inplane", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train (or resume) the shared coarse stage or one row's fine stage")
    t.add_argument("--work", type=Path, required=True)
    t.add_argument("--profile", default="cpu")
    t.add_argument("--stage", choices=("coarse", "fine"), required=True)
    t.add_argument("--row", default="A", help="the row whose fine stage to train (ignored for --stage coarse)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the profile's)")
    t.add_argument("--data", type=Path, default=protocol.REAL_DATA)
    t.add_argument("--no-curve-on-test", dest="curve_on_test", action="store_false",
                   help="no test-scan Dice in the learning curve (loss only)")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("export", help="a trained row -> weights/<model> (card, torch, ONNX)")
    e.add_argument("--work", type=Path, required=True)
    e.add_argument("--profile", default="cpu")
    e.add_argument("--row", default="A")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--name", default=None)
    e.set_defaults(func=cmd_export)
    s = sub.add_parser("score", help="the engine on the CHAOS test scans + FLARE DSC/NSD (eval score)")
    s.add_argument("--model", type=Path, required=True, help="a weights/<model> folder")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--data", type=Path, default=protocol.REAL_DATA)
    s.set_defaults(func=cmd_score)
    c = sub.add_parser("curves", help="learning curves (PNG) of every trained stage")
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.set_defaults(func=cmd_curves)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
