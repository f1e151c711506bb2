"""Command line: segment every `<case>_0000.nii.gz` of a folder into `<case>.nii.gz`.

    python -m inference INPUT_DIR OUTPUT_DIR [--device auto|cpu|cuda] [--backend auto|torch|onnx]
                        [--weights DIR] [--model NAME] [--log-dir DIR] [--threads N] [--no-tta]

One line per case on stdout (ok / FAILED with the reason); exit code 0 when every case was written, 1 when any
case failed, 2 when the run could not start (no input, unwritable output, unusable weights).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .atomic import write_json
from .backends import BackendError
from .config import ModelCardError
from .io import InputError, read_image, write_labels
from .modality import case_name, modality_of, output_name
from .pipeline import CaseRecord, EngineOptions, Segmenter

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference", description=__doc__.split("\n\n")[0])
    p.add_argument("input_dir", type=Path)
    p.add_argument("output_dir", type=Path)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder of model folders (default: %(default)s)")
    p.add_argument("--model", default=None, help="model folder name (default: the first serving the modality)")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="QC records (one JSON per case); default: OUTPUT_DIR's sibling '<name>_qc'")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the network (default: all)")
    p.add_argument("--no-tta", action="store_true", help="one pass per window (ignore the card's mirror TTA)")
    p.add_argument("--compression", type=int, default=1, choices=range(0, 10), metavar="0-9",
                   help="gzip level of the masks (default 1: fast)")
    return p.parse_args(argv)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _write_record(log_dir: Path | None, rec: CaseRecord) -> None:
    if log_dir is None:
        return
    try:
        write_json(log_dir / f"{rec.case}.json", asdict(rec), indent=1, mkdir=True, default=str)
    except OSError as exc:
        _say(f"warning: QC record for {rec.case} not written to {log_dir}: {exc.strerror}")


def _check_output_dir(out_dir: Path) -> str | None:
    if out_dir.exists() and not out_dir.is_dir():
        return "output path exists and is not a folder"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the output folder ({exc.strerror})"
    try:
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"output folder is not writable ({exc.strerror})"
    return None


def run(args: argparse.Namespace) -> int:
    in_dir, out_dir = args.input_dir, args.output_dir
    if not in_dir.is_dir():
        _say(f"error: {in_dir}: input folder does not exist")
        return 2
    entries = sorted(p for p in in_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in entries if case_name(p) is not None]
    misnamed = [p for p in entries if case_name(p) is None and (p.name.endswith(".nii.gz") or p.name.endswith(".nii"))]
    for p in entries:
        if p not in images and p not in misnamed:
            _say(f"skipped: {p.name}: not a NIfTI image (*_0000.nii.gz)")
    for p in misnamed:
        _say(f"FAILED {p.name}: name does not end in _0000.nii.gz, so no output name can be given")
    if not images:
        _say(f"error: {in_dir}: no <case>_0000.nii.gz image in the input folder")
        return 2
    problem = _check_output_dir(out_dir)
    if problem:
        _say(f"error: {out_dir}: {problem}")
        return 2
    log_dir = args.log_dir if args.log_dir is not None else out_dir.parent / f"{out_dir.name}_qc"

    segmenter = Segmenter(EngineOptions(weights_dir=args.weights, device=args.device, backend=args.backend,
                                        model=args.model, threads=args.threads, tta=not args.no_tta))
    failures = len(misnamed)
    model_failures = 0
    for path in images:
        t0 = time.perf_counter()
        rec = CaseRecord(case=case_name(path) or path.name)
        try:
            t = time.perf_counter()
            loaded = read_image(path)
            rec.notes = list(loaded.notes)
            if loaded.constant:
                _say(f"warning: {path.name}: constant image, nothing to segment: an all-background mask is written")
            rec.seconds["read"] = round(time.perf_counter() - t, 4)
            labels = segmenter.segment(loaded, modality_of(path), rec)
            t = time.perf_counter()
            write_labels(labels, loaded.image, out_dir / output_name(path), args.compression)
            rec.seconds["write"] = round(time.perf_counter() - t, 4)
        except InputError as exc:
            failures += 1
            _say(f"FAILED {path.name}: {exc}")
            continue
        except (ModelCardError, BackendError) as exc:
            # no usable model for this case (e.g. none serves its modality): the case fails, the others still run
            failures += 1
            model_failures += 1
            _say(f"FAILED {path.name}: no usable model: {exc}")
            continue
        except Exception as exc:  # any other failure stays with its case; the others still run
            failures += 1
            _say(f"FAILED {path.name}: {type(exc).__name__}: {exc}")
            continue
        rec.seconds["total"] = round(time.perf_counter() - t0, 4)
        _write_record(log_dir, rec)
        notes = f"  [{'; '.join(rec.notes + ([rec.orientation] if rec.orientation != 'canonical' else []))}]" \
            if rec.notes or rec.orientation != "canonical" else ""
        _say(f"ok {path.name} -> {output_name(path)}  {rec.modality} {rec.backend}/{rec.device} "
             f"{rec.seconds['total']:.1f} s{notes}")
    if failures:
        _say(f"{failures} of {len(images) + len(misnamed)} case(s) failed")
    if model_failures == len(images):  # no case could be served at all: the weights are unusable
        _say(f"error: {args.weights}: no usable model for any case")
        return 2
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
