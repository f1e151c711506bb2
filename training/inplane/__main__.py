"""python -m training.inplane run|train|prepare|run-packed|score-trained|export|ship|compose|score|robust|
robust-publish|publish|pack|seed|context|add-context|back-to-input ... (see training/inplane/README.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.config import BACK_TO_INPUT

from . import bench, protocol
from .layout import machine, score_file
from .report import score_model
from .train import train_one
from .packed import PARTS


def _rows(text: str) -> list[str]:
    """A comma-separated list of rows (empty entries skipped)."""
    return [r for r in text.split(",") if r]


def cmd_run(args) -> int:
    csv_path = bench.run_row(args.work, args.profile, args.row, args.data, args.device, args.threads,
                             args.curve_on_test)
    return _print_score(f"r{args.row}", csv_path)


def cmd_train(args) -> int:
    out = train_one(args.work, args.profile, args.row, args.stage, args.data, args.device, args.threads,
                          args.curve_on_test, args.packed)
    print(f"trained {out}")
    return 0


def cmd_prepare(args) -> int:
    from .packed import prepare

    print(f"prepared {prepare(args.work, args.profile, args.row, args.part, args.packed, args.device, args.threads)}")
    return 0


def _report(res, what: str) -> int:
    for name, seconds in res.seconds.items():
        print(f"{name}: {seconds} s")
    if not res.ok:
        for name, err in res.failed.items():
            print(f"FAILED {name}: {err}", file=sys.stderr)
        if res.blocked:
            print(f"not run (an earlier step failed): {res.blocked}", file=sys.stderr)
        return 1
    print(f"{what}: {len(res.done)} step(s) run, {len(res.skipped)} already done")
    return 0


def cmd_run_packed(args) -> int:
    from .recipe import as_profile
    from .steps import run_rows

    prof = as_profile(args.profile)
    rows = _rows(args.rows) or [name for name, r in prof.rows.items() if r.trainer == "inplane"]
    return _report(run_rows(args.work, args.profile, rows, args.packed, device=args.device, jobs=args.jobs,
                            threads=args.threads, score=False), "trained from the pack")


def cmd_score_trained(args) -> int:
    from training.runner import run_steps

    from .recipe import as_profile
    from .steps import trained_steps

    prof = as_profile(args.profile)
    rows = _rows(args.rows) or list(prof.rows)
    steps = trained_steps(args.work, prof, rows, args.data, args.threads)
    if not steps:
        raise ValueError(f"{args.work}: no row of {rows} has both stages trained")
    code = _report(run_steps(args.work, steps, progress=False), "exported and scored")
    names = {s.name for s in steps}
    for row in rows:
        csv_path = score_file(args.work, prof, row)
        if f"r{row}.score" in names and csv_path.is_file():
            _print_score(f"r{row}", csv_path)
    return code


def cmd_export(args) -> int:
    from .export import export_row

    export_row(args.work, args.profile, args.row, args.out, name=args.name or args.out.name, machine=machine())
    print(f"exported {args.out}")
    return 0


def cmd_context(args) -> int:
    from .context import train_context

    print(f"trained {train_context(args.out, args.data, threads=args.threads or 1)}")
    return 0


def cmd_add_context(args) -> int:
    from .context import add_to_model

    print(add_to_model(args.model, args.context, args.out, name=args.name or args.out.name, machine=machine(),
                       data=None if args.whole_grid else args.data))
    return 0


def cmd_back_to_input(args) -> int:
    from training.export import with_back_to_input

    print(with_back_to_input(args.model, args.out, name=args.name or args.out.name, back_to_input=args.mode))
    return 0


def cmd_compose(args) -> int:
    from training.export import compose_model

    print(compose_model(args.coarse_from, args.fine_from, args.out, name=args.name, note=args.note))
    return 0


def _print_score(name: str, csv_path: Path) -> int:
    from .report import row_summary

    if csv_path.name == "pet_check.csv":
        from .pet import check_summary

        c = check_summary(csv_path)
        print(f"{name}: {c['both']}/{c['organs']} (scan, organ) pairs plausible and placed ({c['plausible']} "
              f"plausible, {c['placed']} placed) {csv_path}")
        return 0

    e = row_summary(csv_path)
    print(f"{name}: mean DSC {100 * e['mean'][0]:.1f} %, NSD {100 * e['mean'][1]:.1f} % ("
          + ", ".join(f"{o}: {100 * e[o][0]:.1f}" for o in protocol.SCORED_ORGANS) + f") {csv_path}")
    return 0


def cmd_score(args) -> int:
    """CHAOS test scores for an MRI model, the FDG PET plausibility check for a PET model."""
    return _print_score(args.model.name, score_model(args.model, args.out, args.data, args.threads))


def cmd_robust(args) -> int:
    """The sequence-robustness columns of one MRI model: (a) T2 test scans, (b) the T1 crop, (c) the stress set."""
    from .robust import SETS, columns_table, score_sets

    sets = tuple(_rows(args.sets))
    bad = [x for x in sets if x not in SETS]
    if bad or not sets:
        raise ValueError(f"--sets {args.sets!r}: choose from {', '.join(SETS)}")
    path = score_sets(args.model, args.out, args.data, sets, args.threads, args.cache)
    print(columns_table({args.model.name: (args.model.name, path)}), end="")
    if args.record:
        from .robust import record_in_card

        print(f"recorded in {record_in_card(args.model, path)}")
    return 0


def cmd_robust_publish(args) -> int:
    from .recipe import load_profile
    from .robust import publish

    prof = load_profile(args.profile)
    rows = _rows(args.rows)
    sources = {}
    for spec in args.source:
        row, sep, text = spec.partition("=")
        if not sep:
            raise ValueError(f"--source {spec!r}: expected ROW=TEXT")
        sources[row] = text
    titles = {k: r.title for k, r in prof.rows.items()}
    for spec in args.title:
        row, sep, text = spec.partition("=")
        if not sep:
            raise ValueError(f"--title {spec!r}: expected ROW=TEXT")
        titles[row] = text
    print(publish(args.scored, rows, titles, args.out, sources).read_text(), end="")
    return 0


def cmd_publish(args) -> int:
    print(bench.publish(args.work, args.profile, args.out, tuple(_rows(args.weights_of))).read_text())
    return 0


def cmd_ship(args) -> int:
    out = bench.ship(args.work, args.profile, args.row, args.out, args.name or args.out.name, args.note)
    print(f"shipped {out}")
    return 0


def cmd_pack(args) -> int:
    from .pack import pack

    out = pack(args.out, args.profile, args.data)
    print(f"packed {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_seed(args) -> int:
    if args.results is None and not args.model:
        raise ValueError("seed: give --results DIR and/or --model ROW=DIR")
    for d in bench.seed_work(args.results, args.work) if args.results else []:
        print(f"seeded {d}")
    for spec in args.model:
        row, sep, folder = spec.partition("=")
        if not sep or not row or not folder:
            raise ValueError(f"--model {spec!r}: expected ROW=MODEL_DIR")
        print(f"seeded row {row} from {folder}: {bench.seed_model(args.work, row, Path(folder))}")
    return 0


def _sub(sub, name: str, func, help_: str, work=True, profile=True, data=False, row=False, device=False,
         threads=False):
    """A subcommand with the arguments most commands share."""
    p = sub.add_parser(name, help=help_)
    if work:
        p.add_argument("--work", type=Path, required=True, help="work folder (resumable; not committed)")
    if profile:
        p.add_argument("--profile", default="cpu", help="profile name (training/inplane/profiles) or JSON path")
    if data:
        p.add_argument("--data", type=Path, default=protocol.REAL_DATA, help="the real-data folder")
    if row:
        p.add_argument("--row", required=True, help="a row of the profile (1, A, 4, ...)")
    if device:
        p.add_argument("--device", default="cpu", help="cpu or cuda")
    if threads:
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the profile's)")
    p.set_defaults(func=func)
    return p


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.inplane", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, func, help_ in (("run", cmd_run, "one benchmark row: the pack, train what is missing, export, score"),
                              ("train", cmd_train, "train (or resume) one stage of a row")):
        c = _sub(sub, name, func, help_, data=True, row=True, device=True, threads=True)
        if name == "train":
            c.add_argument("--stage", choices=("coarse", "fine"), required=True)
            c.add_argument("--packed", type=Path, default=None,
                           help="read the volumes from this pack (default: WORK/pack.npz, which `run` makes)")
        c.add_argument("--no-curve-on-test", dest="curve_on_test", action="store_false",
                       help="learning curve without the test-scan Dice (loss only)")
    pr = _sub(sub, "prepare", cmd_prepare, "a row's translator, pseudo-labels or PET renders from a pack (packed.py)",
              row=True, device=True, threads=True)
    pr.add_argument("--part", required=True, choices=PARTS)
    pr.add_argument("--packed", type=Path, required=True, help="the pack (python -m training.inplane pack)")
    rp = _sub(sub, "run-packed", cmd_run_packed, "train every in-plane row (or --rows) from a given pack, steps at "
              "once (--jobs): a machine without the data; score afterwards with score-trained", device=True,
              threads=True)
    rp.add_argument("--packed", type=Path, required=True)
    rp.add_argument("--rows", default="", help="comma-separated rows (default: all of the profile)")
    rp.add_argument("--jobs", type=int, default=1, help="steps at once (each its own process)")
    st = _sub(sub, "score-trained", cmd_score_trained, "export and score every row whose stages are trained (no "
              "training)", data=True, threads=True)
    st.add_argument("--rows", default="", help="comma-separated rows (default: all of the profile)")
    for name, func, help_ in (("export", cmd_export, "a trained row -> a weights folder (card, torch, ONNX)"),
                              ("ship", cmd_ship, "a scored row -> weights/<name> (ONNX, card with its scores)")):
        c = _sub(sub, name, func, help_, row=True)
        c.add_argument("--out", type=Path, required=True)
        c.add_argument("--name", default=None)
        if name == "ship":
            c.add_argument("--note", default="")
    cx = _sub(sub, "context", cmd_context, "the context stage (the duodenum from the other organs' masks) from the "
              "FLARE22 label maps (context.py); resumable", work=False, profile=False, data=True, threads=True)
    cx.add_argument("--out", type=Path, required=True)
    ac = _sub(sub, "add-context", cmd_add_context, "a model folder + a trained context stage -> a new model folder "
              "(its fine labels gain the context stage's organ)", work=False, profile=False, data=True)
    ac.add_argument("--model", type=Path, required=True, help="a weights/<model> folder")
    ac.add_argument("--context", type=Path, required=True, help="the folder `context --out` trained")
    ac.add_argument("--out", type=Path, required=True)
    ac.add_argument("--name", default=None)
    ac.add_argument("--whole-grid", action="store_true", help="run the stage on the whole fine grid instead of "
                    "around the pancreas (the margin comes from the FLARE22 maps under --data)")
    bt = _sub(sub, "back-to-input", cmd_back_to_input, "a model folder -> a new one with the same weights whose fine "
              "labels come back to the input grid another way (card postprocess.back_to_input)", work=False,
              profile=False)
    bt.add_argument("--model", type=Path, required=True, help="a weights/<model> folder")
    bt.add_argument("--mode", required=True, choices=BACK_TO_INPUT)
    bt.add_argument("--out", type=Path, required=True)
    bt.add_argument("--name", default=None)
    m = _sub(sub, "compose", cmd_compose, "a model folder from the coarse stage of one model and the fine stage of "
             "another (training.export.compose_model)", work=False, profile=False)
    for flag in ("--coarse-from", "--fine-from", "--out"):
        m.add_argument(flag, type=Path, required=True)
    m.add_argument("--name", required=True)
    m.add_argument("--note", default="")
    s = _sub(sub, "score", cmd_score, "MRI model: the engine on the CHAOS test scans + FLARE DSC/NSD (eval score); "
             "PET model: organ volumes and placement on the real FDG PET scans", work=False, profile=False, data=True,
             threads=True)
    rb = _sub(sub, "robust", cmd_robust, "MRI model: (a) CHAOS T2 test scans, (b) the real T1 crop ts_mr_sm, (c) the "
              "contrast-stress set, (d) coronal / sagittal reslices, (e) the CT crop (robust.py)", work=False,
              profile=False, data=True, threads=True)
    for c in (s, rb):
        c.add_argument("--model", type=Path, required=True, help="a weights/<model> folder")
        c.add_argument("--out", type=Path, required=True)
    rb.add_argument("--sets", default="t2,t1,stress,coronal,sagittal,ct",
                    help="comma-separated: t2, t1, stress, coronal, sagittal, ct")
    rb.add_argument("--cache", type=Path, default=None, help="where the sets are made (default: OUT/sets)")
    rb.add_argument("--record", action="store_true", help="write the columns into the model card's provenance "
                    "(benchmark.robustness; the weight files are untouched)")
    rp2 = _sub(sub, "robust-publish", cmd_robust_publish, "the robustness columns of several rows -> a results "
               "folder", work=False)
    rp2.add_argument("--scored", type=Path, required=True, help="folder of r<row>/ outputs of `robust`")
    rp2.add_argument("--rows", required=True, help="comma-separated rows, in table order")
    rp2.add_argument("--out", type=Path, required=True)
    rp2.add_argument("--source", action="append", default=[], metavar="ROW=TEXT",
                     help="where the row's scored weights came from (printed under the table)")
    rp2.add_argument("--title", action="append", default=[], metavar="ROW=TEXT",
                     help="the title of a row that is not one of the profile's (e.g. a model made by add-context)")
    pb = _sub(sub, "publish", cmd_publish, "table, curves, stage weights and scores -> a results folder")
    pb.add_argument("--out", type=Path, required=True)
    pb.add_argument("--weights-of", default="A", help="rows whose fine weights are published (comma-separated; "
                    "the coarse stage's always are): those that later rows start from")
    pk = _sub(sub, "pack", cmd_pack, "the volumes every stage trains on, prepared once (for a machine without the "
              "data: --out P.npz)", work=False, data=True)
    pk.add_argument("--out", type=Path, required=True)
    sd = _sub(sub, "seed", cmd_seed, "published stages -> a new work folder (continue on another machine)",
              profile=False)
    sd.add_argument("--results", type=Path, help="a published results folder: its stages")
    sd.add_argument("--model", action="append", default=[], metavar="ROW=DIR",
                    help="a shipped model folder of row ROW: a teacher (WORK/models/rROW) and a start row (its fine "
                         "stage recovered from ONNX); repeatable")
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
