"""Where a 2D in-plane stage's probability for one label goes inside the reference voxels of that label: the
mean probability inside and outside, and which label wins inside (a diagnosis for a label a model misses, e.g.
row RAd's duodenum). Usage: python benchmarks/label_probe.py STAGE_DIR CASE [CASE ...] [--label 12]
[--data DIR]; STAGE_DIR holds final.pt and summary.json (training.inplane), each CASE is a TotalSegmentator crop
under DATA/totalseg_examples (images/CASE_0000.nii.gz, labels/CASE.nii.gz)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from training.inplane import protocol
from training.inplane.data import load_volume
from training.inplane.loop import build_net2d, slice_logits


def probe(stage: Path, image: Path, label: Path, lab: int) -> dict:
    summary = json.loads((stage / "summary.json").read_text())
    ids, rec = tuple(summary["label_ids"]), summary["recipe"]
    if lab not in ids:
        raise ValueError(f"{stage}: label {lab} is not among the stage's labels {list(ids)}")
    net = build_net2d(tuple(rec["features"]), len(ids))
    net.load_state_dict(torch.load(stage / "final.pt", map_location="cpu", weights_only=True))
    vol = load_volume(protocol.Case(image.name, image, label), tuple(rec["spacing_mm"]), ids)
    p = np.concatenate([logits.softmax(1).numpy() for _, logits in slice_logits(net, vol)])
    ch = ids.index(lab)
    ref = vol.labels == ch
    if not ref.any():
        raise ValueError(f"{label}: no voxel of label {lab}")
    winners, counts = np.unique(p.argmax(1)[ref], return_counts=True)
    return {"voxels": int(ref.sum()), "p_inside": round(float(p[:, ch][ref].mean()), 4),
            "p_outside": round(float(p[:, ch][~ref].mean()), 4),
            "wins_inside": {int(ids[v]): round(float(c / ref.sum()), 3) for v, c in zip(winners, counts, strict=True)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", type=Path)
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--label", type=int, default=12)
    ap.add_argument("--data", type=Path, default=protocol.REAL_DATA)
    a = ap.parse_args(argv)
    ts = a.data / "totalseg_examples"
    for case in a.cases:
        print(case, json.dumps(probe(a.stage, ts / "images" / f"{case}_0000.nii.gz", ts / "labels" / f"{case}.nii.gz",
                                     a.label)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
