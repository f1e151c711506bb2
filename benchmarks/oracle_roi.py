"""Fine stage with an oracle ROI: how good is a model's fine network when the ROI is right?

For each labelled scan, the engine runs twice with one model: as shipped (coarse stage -> ROI -> fine), and with the
ROI taken from the reference labels (union box of the scored organs + the card's margin; coarse stage skipped,
`GivenRoiSegmenter` below). Both are scored with `eval/` (DSC, NSD) on the scored organs. The gap between
the two rows is what the coarse stage costs; the oracle row is what the UDA training of the fine stage reached.
A diagnostic only: the oracle reads the test labels, so its numbers are never a benchmark result.

    python benchmarks/oracle_roi.py --weights DIR --model NAME --images DIR --labels DIR --out CSV
                                    [--cases chaos_t2_33 ...] [--organs 1,2,3,13] [--no-tta] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval.metrics import organs_for, score_case  # noqa: E402
from inference import orientation, roi  # noqa: E402
from inference.atomic import write_csv  # noqa: E402
from inference.io import read_image  # noqa: E402
from inference.pipeline import CaseRecord, EngineOptions, Segmenter  # noqa: E402


class GivenRoiSegmenter(Segmenter):
    """The engine with the fine stage's region given by the caller (a box on the CANONICAL grid, see
    inference/orientation.py) instead of the coarse stage's ROI; the coarse stage is skipped. `roi_box` None: the
    engine as shipped. A diagnostic: the shipped engine has no such input."""

    roi_box: roi.Box | None = None

    def _region(self, case, nets, card, rec):
        if self.roi_box is None:
            return super()._region(case, nets, card, rec)
        shape = case.canon.shape
        box = roi.expand_box(self.roi_box, (0.0, 0.0, 0.0), case.spacing, shape)  # no margin: clipped to the image
        if any(b <= a for a, b in zip(box.start, box.stop, strict=True)):
            raise ValueError(f"roi_box {self.roi_box} is empty on the canonical grid {shape}")
        rec.notes.append("ROI given by the caller: coarse stage skipped")
        return box, None


def oracle_box(reference_zyx: np.ndarray, organs, spacing_zyx, margin_mm, orient) -> roi.Box:
    """Union box of `organs` in the reference labels, on the canonical grid, grown by `margin_mm`."""
    canon = orient.apply(np.isin(reference_zyx, list(organs)))
    box = roi.foreground_box(canon)
    if box is None:
        raise ValueError("the reference labels hold none of the scored organs")
    return roi.expand_box(box, margin_mm, orient.spacing(spacing_zyx), canon.shape)


def evaluate(weights: Path, model: str, images: Path, labels: Path, cases: list[str], organ_ids: list[int],
             tta: bool = True, threads: int | None = None) -> list[dict]:
    seg = GivenRoiSegmenter(EngineOptions(weights_dir=weights, model=model, device="cpu", backend="onnx",
                                          threads=threads, tta=tta))
    organs = organs_for("mri", only_labels=organ_ids)
    rows = []
    for case in cases:
        loaded = read_image(images / f"{case}_0000.nii.gz")
        ref_img = sitk.ReadImage(str(labels / f"{case}.nii.gz"))
        ref = sitk.GetArrayFromImage(ref_img)
        orient = orientation.orientation_from_direction(loaded.image.GetDirection())
        card = seg._model_for("MRI")[0].card
        box = oracle_box(ref, organ_ids, tuple(reversed(loaded.image.GetSpacing())), card.roi.margin_mm, orient)
        for mode, given in (("engine", None), ("oracle_roi", box)):
            rec = CaseRecord(case=case)
            t = time.perf_counter()
            seg.roi_box = given
            pred = seg.segment(loaded, "MRI", rec)
            seconds = time.perf_counter() - t
            scores = score_case(ref.transpose(2, 1, 0), pred.transpose(2, 1, 0), ref_img.GetSpacing(), organs)
            for s in scores:
                rows.append({"case": case, "mode": mode, "organ": s.label, "dsc": s.dsc, "nsd": s.nsd,
                             "seconds": round(seconds, 1), "roi": f"{list(rec.roi_box_zyx['start'])}-"
                                                               f"{list(rec.roi_box_zyx['stop'])}"})
            print(f"{case} {mode:10s} " + " ".join(f"{s.label}:{s.dsc:.3f}" for s in scores)
                  + f"  ({seconds:.1f} s, ROI {rec.roi_box_zyx})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--cases", nargs="+", default=["chaos_t2_33", "chaos_t2_34", "chaos_t2_37", "chaos_t2_38"])
    p.add_argument("--organs", default="1,2,3,13")
    p.add_argument("--out", type=Path, required=True, help="CSV: case, mode, organ, dsc, nsd, seconds, roi")
    p.add_argument("--no-tta", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    rows = evaluate(a.weights, a.model, a.images, a.labels, a.cases, [int(o) for o in a.organs.split(",")],
                    tta=not a.no_tta, threads=a.threads)
    write_csv(a.out, list(rows[0]), [list(r.values()) for r in rows], mkdir=True)
    for mode in ("engine", "oracle_roi"):
        by_organ = {}
        for r in rows:
            if r["mode"] == mode:
                by_organ.setdefault(r["organ"], []).append(r["dsc"])
        means = {o: float(np.mean(v)) for o, v in by_organ.items()}
        print(f"{mode:10s} mean DSC " + " ".join(f"{o}:{m:.3f}" for o, m in means.items())
              + f"  all:{np.mean(list(means.values())):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
