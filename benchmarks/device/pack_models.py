"""Pack benchmark models so that they come back from a device run (at most 8 files of 16 MiB, 64 MiB in all).

    python benchmarks/device/pack_models.py WORK OUT --rows 2,PR [--part-mib 15] [--budget-mib 50]

Each WORK/models/r<row> (torch weights, as the benchmark exports them) is copied with its weights stored as
float16 (half the size; the engine loads them into its float32 networks) and its card's sha256 rewritten, then
all rows go into one tar split into OUT/models.tar.00, .01, ... of at most `--part-mib`. Rows are taken in the
order given until `--budget-mib` would be exceeded; the rest are named in the output and left out. Unpack with
`cat models.tar.* | tar x` and add ONNX with `training.export.add_onnx` (or `uda_bench ship`).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from inference.atomic import atomic_path  # noqa: E402
from inference.config import ModelCardError  # noqa: E402
from inference.model_folder import load_model_folder, sha256_of, write_card  # noqa: E402


def half_copy(src: Path, dst: Path) -> int:
    """Copy model folder `src` to `dst` with float16 torch weights (no ONNX); returns the bytes written."""
    card = load_model_folder(src, verify=True).card
    dst.mkdir(parents=True, exist_ok=True)
    sha, stages = {}, {}
    for stage in ("coarse", "fine"):
        cfg = getattr(card, stage)
        if "torch" not in cfg.files:
            raise ValueError(f"{src}: stage {stage} has no torch weights")
        state = torch.load(src / cfg.files["torch"], map_location="cpu", weights_only=True)
        converted: dict[int, torch.Tensor] = {}   # keys sharing a tensor (decoder.encoder.* = encoder.*) stay shared
        state = {k: converted.setdefault(v.data_ptr(), v.half()) if v.is_floating_point() else v
                 for k, v in state.items()}
        torch.save(state, dst / cfg.files["torch"])
        sha[cfg.files["torch"]] = sha256_of(dst / cfg.files["torch"])
        stages[stage] = replace(cfg, files={"torch": cfg.files["torch"]})
    write_card(replace(card, coarse=stages["coarse"], fine=stages["fine"], sha256=sha), dst)
    load_model_folder(dst, verify=True)
    return sum(p.stat().st_size for p in dst.iterdir())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--rows", required=True, help="comma-separated rows, most wanted first")
    p.add_argument("--part-mib", type=float, default=15.0)
    p.add_argument("--budget-mib", type=float, default=50.0)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        packed, left, total = [], [], 0
        for row in (r.strip() for r in a.rows.split(",") if r.strip()):
            src = a.work / "models" / f"r{row}"
            if not (src / "model.json").is_file():
                left.append(f"{row} (no model)")
                continue
            try:
                size = half_copy(src, Path(tmp) / f"r{row}")
            except (ModelCardError, ValueError, OSError, RuntimeError) as exc:   # one bad model: the others go on
                left.append(f"{row} ({exc})")
                continue
            if (total + size) / 2**20 > a.budget_mib:
                shutil.rmtree(Path(tmp) / f"r{row}")
                left.append(f"{row} (over the budget)")
                continue
            packed.append(f"r{row}")
            total += size
        if not packed:
            print(f"no model packed; left out: {', '.join(left)}")
            return 1
        tar_path = Path(tmp) / "models.tar"
        with tarfile.open(tar_path, "w") as tar:
            for name in packed:
                tar.add(Path(tmp) / name, arcname=name)
        part = int(a.part_mib * 2**20)
        with open(tar_path, "rb") as fh:
            k = 0
            while chunk := fh.read(part):   # each part under a temporary name, then renamed
                target = a.out / f"models.tar.{k:02d}"
                with atomic_path(target) as tmp:
                    tmp.write_bytes(chunk)
                k += 1
    print(f"packed {', '.join(packed)} ({total / 2**20:.1f} MiB float16) into {k} part(s)"
          + (f"; left out: {', '.join(left)}" if left else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
