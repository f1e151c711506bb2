"""Bounded-memory check: segment one 1024x1024x600 volume (int16, 1.2 GB of voxels) in a fresh process and
report its peak RSS against the input's size.

    python benchmarks/large_volume.py --out benchmarks/results/<machine> [--size 1024,1024,600]

The network is a small random test model (memory, not accuracy, is measured: every stage of the data path runs,
the ROI covers the whole image). Writes large_volume.md into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prepare(work: Path, size) -> None:
    """Input volume and test model (run in its own process: ru_maxrss is inherited across fork and exec, so the
    measuring parent must stay small)."""
    import SimpleITK as sitk

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from eval.phantoms import synthetic_mr
    from helpers import make_random_model, tiny_stage

    (work / "in").mkdir()
    img = synthetic_mr(size)
    img.SetSpacing((0.4, 0.4, 0.5))
    sitk.WriteImage(img, str(work / "in" / "large_0000.nii.gz"), True, 1)
    del img
    make_random_model(work / "w" / "m", seed=3, bias_foreground=0.3, coarse=tiny_stage((8.0, 8.0, 8.0), (32, 32, 32)),
                      fine=tiny_stage((3.0, 2.5, 2.5), (32, 64, 64), tta_axes=()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="1024,1024,600", help="x,y,z voxels")
    p.add_argument("--prepare", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.split(","))
    if args.prepare:
        prepare(args.prepare, size)
        return 0
    work = Path(tempfile.mkdtemp(prefix="flare_large_"))
    subprocess.run([sys.executable, __file__, "--out", str(args.out), "--size", args.size, "--prepare", str(work)],
                   check=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "inference", str(work / "in"), str(work / "out"), "--weights",
                             str(work / "w"), "--device", "cpu", "--log-dir", str(work / "qc")], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    peak_mb = usage.ru_maxrss / 1024
    input_mb = size[0] * size[1] * size[2] * 2 / 2**20
    rec = json.loads((work / "qc" / "large.json").read_text())
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    text = (f"# Large volume, bounded memory\n\nMachine: {cpu}, {os.cpu_count()} cores; "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}.\n\n"
            f"Input {size[0]}x{size[1]}x{size[2]} int16 ({input_mb:.0f} MiB of voxels) at 0.4x0.4x0.5 mm, "
            f"ROI = whole image (random test model), fine grid {rec['fine_shape_zyx']}.\n\n"
            f"| exit | wall s | peak RSS MiB | peak / input voxels | seconds per stage |\n|---|---|---|---|---|\n"
            f"| {os.waitstatus_to_exitcode(status)} | {wall:.1f} | {peak_mb:.0f} | {peak_mb / input_mb:.2f} | "
            f"{rec['seconds']} |\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_volume.md").write_text(text)
    print(text)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
