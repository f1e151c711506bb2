"""python -m training.uda_bench run|score|report: the end-to-end UDA benchmark on real CHAOS T2 MRI.

    python -m training.uda_bench run    --work W [--profile gpu|smoke|FILE] [--rows 1,2,2b,3,4,P] [--device auto]
                                        [--jobs N] [--data ../shared/data/real]
    python -m training.uda_bench score  --work W --row R [--device auto] [--backend torch|onnx]
    python -m training.uda_bench report --work W --out DIR [--rows ...] [--machine TEXT]
    python -m training.uda_bench ship   --work W --row R --out weights/NAME --name NAME [--backends onnx torch]
    python -m training.uda_bench compose --coarse-from MODEL --fine-from MODEL --out weights/NAME --name NAME

`run` trains every row and scores it on the test cases (resumable: finished steps are skipped; progress per
step); `score` is that scoring step alone (the engine on the test cases with the row's model, then eval/ on liver,
kidneys, spleen; row P, the PET row: organ-volume plausibility on the two real FDG PET scans, which have no
labels); `report` writes the tables, box plots and overlays of the scored rows.
Exit codes: 0 success, 1 some step failed (the others were run; each failure is listed), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .protocol import ROWS, load_profile

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"


def _rows(text: str) -> tuple[str, ...]:
    rows = tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        raise argparse.ArgumentTypeError(f"rows {bad or text!r}: choose from {','.join(ROWS)}")
    return rows


def _device(name: str) -> str:
    if name != "auto":
        return name
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.uda_bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train every row (resumable)")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real data folder (default: ../shared/data/real)")
    r.add_argument("--profile", default="gpu", help="profile name (training/uda_bench/profiles) or JSON file")
    r.add_argument("--rows", type=_rows, default=ROWS, help="comma-separated rows (default: all)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    r.add_argument("--jobs", type=int, default=4, help="steps run at once (trainings share the GPU)")
    r.add_argument("--no-progress", action="store_true")
    c = sub.add_parser("score", help="run the engine on the test cases with one row's model and score it")
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--row", choices=ROWS, required=True)
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    c.add_argument("--backend", choices=("auto", "torch", "onnx"), default=None,
                   help="default: torch on cuda (no ONNX export needed), ONNX Runtime on the CPU")
    c.add_argument("--threads", type=int, default=None)
    h = sub.add_parser("ship", help="copy a scored row's model into a weights folder, scores in its card")
    h.add_argument("--work", type=Path, required=True)
    h.add_argument("--row", choices=ROWS, required=True)
    h.add_argument("--out", type=Path, required=True, help="model folder to write, e.g. weights/<name>")
    h.add_argument("--name", required=True)
    h.add_argument("--backends", nargs="+", choices=("onnx", "torch"), default=["onnx"])
    h.add_argument("--machine", default="")
    h.add_argument("--note", default="")
    m = sub.add_parser("compose", help="a model folder from the coarse stage of one model and the fine stage of "
                                       "another (training.export.compose_model)")
    m.add_argument("--coarse-from", type=Path, required=True)
    m.add_argument("--fine-from", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--name", required=True)
    m.add_argument("--note", default="")
    s = sub.add_parser("report", help="tables, box plots, overlays of the scored rows")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--rows", type=_rows, default=ROWS)
    s.add_argument("--machine", default=None, help="machine description for the results (default: platform info)")
    a = p.parse_args(argv)

    if a.cmd == "run":
        from training.runner import run_steps
        from .steps import build_steps, write_inputs

        try:
            profile = load_profile(a.profile)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: --profile: {exc}", file=sys.stderr)
            return 2
        if not a.data.is_dir():
            print(f"error: --data {a.data}: no such folder", file=sys.stderr)
            return 2
        device = _device(a.device)
        a.work.mkdir(parents=True, exist_ok=True)
        write_inputs(a.work, profile)
        steps = build_steps(a.work, a.data, profile, a.rows, device)
        print(f"benchmark: profile {profile.name}, rows {','.join(a.rows)}, device {device}, {len(steps)} steps, "
              f"work {a.work}", flush=True)
        res = run_steps(a.work, steps, jobs=a.jobs, progress=not a.no_progress)
        print(f"done {len(res.done)}, already done {len(res.skipped)}, failed {len(res.failed)}, "
              f"blocked {len(res.blocked)}")
        for name, why in res.failed.items():
            print(f"FAILED {name}: {why}", file=sys.stderr)
        if res.blocked:
            print(f"not run (a step they need failed): {', '.join(res.blocked)}", file=sys.stderr)
        return 0 if res.ok else 1

    if a.cmd == "compose":
        from inference.config import ModelCardError
        from training.export import compose_model

        try:
            print(compose_model(a.coarse_from, a.fine_from, a.out, name=a.name, note=a.note))
        except (FileNotFoundError, ValueError, ModelCardError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    from .report import score_row, ship, write_report

    if a.cmd == "ship":
        try:
            print(ship(a.work, a.row, a.out, a.name, tuple(a.backends), a.machine, a.note))
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    if a.cmd == "score":
        device = _device(a.device)
        backend = a.backend or ("torch" if device == "cuda" else "onnx")
        try:
            print(score_row(a.work, a.row, device, backend, a.threads))
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"error: row {a.row}: {exc}", file=sys.stderr)
            return 1
        return 0

    rows = [r for r in a.rows if (a.work / "scores" / f"r{r}.csv").is_file()
            or (a.work / "scores" / f"r{r}_pet.csv").is_file()]
    missing = [r for r in a.rows if r not in rows]
    if missing:
        print(f"not scored (no WORK/scores/r<row>.csv): rows {','.join(missing)}", file=sys.stderr)
    if not rows:
        print("error: no scored row", file=sys.stderr)
        return 2
    import platform

    machine = a.machine or f"{platform.machine()} {platform.processor() or ''}".strip()
    print(write_report(a.work, a.out, rows, machine))
    return 0

if __name__ == "__main__":
    sys.exit(main())
