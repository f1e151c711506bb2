"""CT and FDG-PET-like images rendered from label maps (the end-to-end benchmark's labelled sources)."""
from .ct import PHASES, RenderConfig, body_mask_from_image, render_ct
from .cases import render_case, render_folder, render_pet_case, render_pet_folder, write_body_mask
from .pet import PetRenderConfig, render_pet

__all__ = ["PHASES", "RenderConfig", "body_mask_from_image", "render_ct", "render_case", "render_folder", "write_body_mask",
           "PetRenderConfig", "render_pet", "render_pet_case", "render_pet_folder"]
