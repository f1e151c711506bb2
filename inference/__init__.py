"""flare-uda inference engine: coarse-to-fine abdominal organ segmentation of MRI and PET.

Public API: `segment_image` (one image in, a uint8 label map with the input's geometry out) and the CLI
`python -m inference INPUT_DIR OUTPUT_DIR`. This package never imports `training` or `eval`.
The public names load the pipeline (SimpleITK, cc3d, ONNX Runtime) on first use, so that the numpy-only modules
(`config`, `resample`, `normalization`, `orientation`, `labels`) import without them (e.g. training on a machine
that has torch and numpy only).
"""
from __future__ import annotations

__all__ = ["segment_image", "Segmenter", "EngineOptions"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
