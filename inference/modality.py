"""Case naming and modality detection from file names (the organizers' conventions)."""
from __future__ import annotations

import re
from pathlib import Path

IMAGE_SUFFIXES = ("_0000.nii.gz", "_0000.nii")
PET_PATTERN = re.compile(r"fdg|psma|pet", re.IGNORECASE)


def case_name(path: Path | str) -> str | None:
    """`amos_0540` for `amos_0540_0000.nii.gz`; None when the name lacks the `_0000` channel suffix."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def output_name(path: Path | str) -> str:
    case = case_name(path)
    if case is None:
        raise ValueError(f"{Path(path).name}: not named <case>_0000.nii.gz")
    return case + ".nii.gz"


def modality_of(path: Path | str) -> str:
    """'PET' when the case name contains fdg, psma or pet (any case), else 'MRI'."""
    name = case_name(path) or Path(path).name
    return "PET" if PET_PATTERN.search(name) else "MRI"
