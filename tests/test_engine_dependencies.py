"""The container ships inference/ + weights/ with ONNX Runtime only: no torch, no training/, no eval/."""
import subprocess
import sys
from pathlib import Path

from helpers import write_image
from phantoms import blob_image

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
for name in ("torch", "training", "eval", "nibabel", "scipy"):
    sys.modules[name] = None  # any import of these now raises ImportError
from inference.cli import main
code = main([sys.argv[1], sys.argv[2], "--weights", sys.argv[3], "--backend", "onnx", "--device", "cpu"])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("training", "eval") and sys.modules[m] is not None)
assert not leaked, leaked
sys.exit(code)
"""


def test_onnx_engine_runs_without_torch_training_or_eval(tmp_path, random_model):
    (tmp_path / "in").mkdir()
    write_image(blob_image((20, 40, 40)), tmp_path / "in" / "fdg_x_0000.nii.gz", spacing=(3.0, 3.0, 4.0))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "in"), str(tmp_path / "out"),
                           str(random_model)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "fdg_x.nii.gz").is_file()
