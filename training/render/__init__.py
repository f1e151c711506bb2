"""CT, FDG-PET-like and random-contrast images rendered from label maps (the end-to-end benchmark's labelled sources)."""
from .ct import PHASES, RenderConfig, body_mask_from_image, render_ct
from .cases import (render_case, render_folder, render_pet_case, render_pet_folder, render_synth_case,
                    render_variants_folder, write_body_mask)
from .pet import PetRenderConfig, render_pet
from .synth import SynthRenderConfig, render_synth

__all__ = ["PHASES", "RenderConfig", "body_mask_from_image", "render_ct", "render_case", "render_folder", "write_body_mask",
           "PetRenderConfig", "render_pet", "render_pet_case", "render_pet_folder", "SynthRenderConfig", "render_synth",
           "render_synth_case", "render_variants_folder"]
