"""The label tables as data: FLARE organ names and the PET output scheme (what a mask's numbers mean)."""
from __future__ import annotations

# FLARE MRI numbering (also the numbering of the CT training labels): label -> organ name
FLARE_ORGANS: dict[int, str] = {
    1: "liver", 2: "right kidney", 3: "spleen", 4: "pancreas", 5: "aorta", 6: "inferior vena cava",
    7: "right adrenal gland", 8: "left adrenal gland", 9: "gallbladder", 10: "esophagus", 11: "stomach",
    12: "duodenum", 13: "left kidney",
}
# the same names as identifiers (file names, JSON keys, CSV columns): "right_kidney", "inferior_vena_cava", ...
FLARE_KEYS: dict[int, str] = {label: name.replace(" ", "_") for label, name in FLARE_ORGANS.items()}
# the PET masks' numbering: liver 1, right kidney 2, spleen 3, left kidney 4
PET_ORGANS: dict[int, str] = {1: "liver", 2: "right kidney", 3: "spleen", 4: "left kidney"}


def organ_names(modality: str) -> dict[int, str]:
    """Label -> organ name of the masks the engine writes for `modality` ('MRI' or 'PET')."""
    return PET_ORGANS if modality == "PET" else FLARE_ORGANS
