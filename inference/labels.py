"""The organ table as data: every label number, name, spelling and scheme of the project comes from `ORGANS`.

One row per FLARE organ: its FLARE number (the MRI masks and the CT training labels), its name, the short
spelling of the organizers' scoring code (CSV columns, nnU-Net dataset.json), its NSD tolerance, and its value in
the PET masks (liver 1, right kidney 2, spleen 3, left kidney 4; none for the other organs). Everything else here
is derived from it; the engine, training and evaluation import these names instead of writing their own tables.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organ:
    label: int          # FLARE numbering
    name: str           # "right kidney"
    short: str          # the organizers' spelling: "right_kidney", "ivc", "right_adrenal"
    nsd_mm: float       # FLARE NSD tolerance
    pet: int | None = None   # its number in the PET masks, None: not a PET organ


ORGANS: tuple[Organ, ...] = (
    Organ(1, "liver", "liver", 5.0, pet=1),
    Organ(2, "right kidney", "right_kidney", 3.0, pet=2),
    Organ(3, "spleen", "spleen", 3.0, pet=3),
    Organ(4, "pancreas", "pancreas", 5.0),
    Organ(5, "aorta", "aorta", 2.0),
    Organ(6, "inferior vena cava", "ivc", 2.0),
    Organ(7, "right adrenal gland", "right_adrenal", 2.0),
    Organ(8, "left adrenal gland", "left_adrenal", 2.0),
    Organ(9, "gallbladder", "gallbladder", 2.0),
    Organ(10, "esophagus", "esophagus", 3.0),
    Organ(11, "stomach", "stomach", 5.0),
    Organ(12, "duodenum", "duodenum", 7.0),
    Organ(13, "left kidney", "left_kidney", 3.0, pet=4),
)
BY_LABEL: dict[int, Organ] = {o.label: o for o in ORGANS}

# FLARE numbering: label -> organ name (text, tables), and -> the one identifier spelling (the organizers' short
# names: dataset.json labels, CSV columns, manifest and JSON keys)
FLARE_ORGANS: dict[int, str] = {o.label: o.name for o in ORGANS}
FLARE_KEYS: dict[int, str] = {o.label: o.short for o in ORGANS}
# left/right organ pairs as (right, left) FLARE labels: kidneys, adrenal glands
LATERAL_PAIRS: tuple[tuple[int, int], ...] = ((2, 13), (7, 8))
# the PET masks: FLARE label -> PET value, and PET value -> organ name
PET_FROM_MRI: dict[int, int] = {o.label: o.pet for o in ORGANS if o.pet is not None}
PET_ORGANS: dict[int, str] = {o.pet: o.name for o in sorted(ORGANS, key=lambda o: o.pet or 0) if o.pet is not None}
# what a mask of each modality holds: network (FLARE) label -> value written (a model card may give its own)
OUTPUT_SCHEMES: dict[str, dict[int, int]] = {"MRI": {o.label: o.label for o in ORGANS}, "PET": PET_FROM_MRI}
# the organs each dataset labels (FLARE numbers)
DATASET_ORGANS: dict[str, tuple[int, ...]] = {
    "flare_mri": tuple(o.label for o in ORGANS),
    "flare_pet": tuple(PET_FROM_MRI),
    "btcv": tuple(o.label for o in ORGANS if o.label != 12),   # BTCV labels no duodenum
    "chaos": (1, 2, 3, 13),                                     # CHAOS MRI: liver, kidneys, spleen
}


def organ_names(modality: str) -> dict[int, str]:
    """Mask value -> organ name of the masks the engine writes for `modality` ('MRI' or 'PET')."""
    return PET_ORGANS if modality == "PET" else FLARE_ORGANS
