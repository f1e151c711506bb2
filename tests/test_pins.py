"""The ONNX Runtime the tests run is the version the container ships (onnxruntime-gpu there, onnxruntime here)."""
from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tested_onnxruntime_is_the_shipped_version():
    shipped = re.search(r"onnxruntime-gpu==([\d.]+)", (ROOT / "Dockerfile").read_text()).group(1)
    pinned = re.search(r'"onnxruntime==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert pinned == shipped
    assert version("onnxruntime") == shipped
