"""FDG-PET-like and random-contrast images painted from label maps (row P's labelled PET source; the label-map
synthesis of row RAd).

The painters (`body`, `pet`, `synth`, `variants`) need numpy and scipy only; the file functions (`cases`: SimpleITK)
are imported on first use, so a machine without SimpleITK can still paint volumes in memory."""
from .body import body_mask_from_image
from .pet import PetRenderConfig, render_pet
from .synth import SynthRenderConfig, render_synth

_FROM_CASES = ("render_pet_case", "render_pet_folder", "write_body_mask")

__all__ = ["body_mask_from_image", "PetRenderConfig", "render_pet", "SynthRenderConfig", "render_synth", *_FROM_CASES]


def __getattr__(name: str):
    if name in _FROM_CASES:
        from . import cases

        return getattr(cases, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
