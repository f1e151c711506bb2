"""benchmarks/device/pack_models.py: models come back from a device run as float16 parts that rebuild a model the
engine verifies and loads."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from inference.model_folder import load_model_folder

from helpers import make_random_model

ROOT = Path(__file__).resolve().parents[1]


def test_pack_split_unpack_gives_float16_weights_that_verify(tmp_path):
    work = tmp_path / "w"
    make_random_model(work / "models" / "r2", seed=1, onnx=False)
    make_random_model(work / "models" / "rPR", seed=2, onnx=True)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/device/pack_models.py"), str(work), str(out),
                           "--rows", "PR,2,9", "--part-mib", "0.05"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "packed rPR, r2" in proc.stdout and "9 (no model)" in proc.stdout
    parts = sorted(out.glob("models.tar.*"))
    assert len(parts) > 1 and all(p.stat().st_size <= 0.05 * 2**20 for p in parts)
    joined = tmp_path / "all.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    for row in ("r2", "rPR"):
        back = load_model_folder(tmp_path / "back" / row, verify=True).card
        assert set(back.coarse.files) == {"torch"}   # ONNX is added here afterwards, from these weights
        for stage in ("coarse", "fine"):
            f = getattr(back, stage).files["torch"]
            half = torch.load(tmp_path / "back" / row / f, weights_only=True)
            full = torch.load(work / "models" / row / f, weights_only=True)
            assert half.keys() == full.keys()
            for k in full:
                assert half[k].dtype == (torch.float16 if full[k].is_floating_point() else full[k].dtype)
                torch.testing.assert_close(half[k].float(), full[k].float(), rtol=1e-3, atol=1e-3)


def test_pack_respects_the_budget_and_names_a_broken_model(tmp_path):
    work = tmp_path / "w"
    make_random_model(work / "models" / "r1", seed=1, onnx=False)
    make_random_model(work / "models" / "r2", seed=2, onnx=False)
    (work / "models/r2/fine.pt").write_bytes(b"not a network")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/device/pack_models.py"), str(work),
                           str(tmp_path / "ok"), "--rows", "2,1"], capture_output=True, text=True)
    assert proc.returncode == 0 and "packed r1" in proc.stdout and "2 (" in proc.stdout and "fine.pt" in proc.stdout
    assert not list((tmp_path / "ok").glob(".*"))   # no temporary part left
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/device/pack_models.py"), str(work),
                           str(tmp_path / "out"), "--rows", "1", "--budget-mib", "0.0001"], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "1 (over the budget)" in proc.stdout
