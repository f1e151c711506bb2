"""FDG-PET-like and random-contrast images painted from label maps (row P's labelled PET source; the label-map
synthesis of row RAd), in memory: the painters (`body`, `pet`, `synth`, `variants`) need numpy and scipy only, so a
machine without SimpleITK paints the benchmark's volumes from its pack (training.inplane.packed)."""
from .body import body_mask_from_image
from .pet import PetRenderConfig, render_pet
from .synth import SynthRenderConfig, render_synth

__all__ = ["body_mask_from_image", "PetRenderConfig", "render_pet", "SynthRenderConfig", "render_synth"]
