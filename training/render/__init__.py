"""CT, FDG-PET-like and random-contrast images rendered from label maps (the end-to-end benchmark's labelled sources).

The painters (`ct`, `pet`, `synth`, `variants`) need numpy and scipy only; the file functions (`cases`: SimpleITK)
are imported on first use, so a machine without SimpleITK can still paint volumes in memory."""
from .ct import PHASES, RenderConfig, body_mask_from_image, render_ct
from .pet import PetRenderConfig, render_pet
from .synth import SynthRenderConfig, render_synth

_FROM_CASES = ("render_case", "render_folder", "render_pet_case", "render_pet_folder", "render_synth_case",
               "render_variants_folder", "write_body_mask")

__all__ = ["PHASES", "RenderConfig", "body_mask_from_image", "render_ct", "PetRenderConfig", "render_pet",
           "SynthRenderConfig", "render_synth", *_FROM_CASES]


def __getattr__(name: str):
    if name in _FROM_CASES:
        from . import cases

        return getattr(cases, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
