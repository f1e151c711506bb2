"""flare-uda inference engine: coarse-to-fine abdominal organ segmentation of MRI and PET.

Public API: `segment_image` (one image in, a uint8 label map with the input's geometry out) and the CLI
`python -m inference INPUT_DIR OUTPUT_DIR`. This package never imports `training` or `eval`.
"""
from .pipeline import EngineOptions, Segmenter, segment_image

__all__ = ["segment_image", "Segmenter", "EngineOptions"]
