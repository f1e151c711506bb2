"""CT rendered from label maps (the end-to-end benchmark's labelled source)."""
from .ct import PHASES, RenderConfig, body_mask_from_image, render_ct
from .cases import render_case, render_folder, write_body_mask

__all__ = ["PHASES", "RenderConfig", "body_mask_from_image", "render_ct", "render_case", "render_folder", "write_body_mask"]
