"""Organ Attention CycleGAN (2D): CT -> MRI / PET translation with an organ-attention discriminator and a
co-trained segmenter, for training segmentation models on synthetic target-modality images.

    networks.py    generators, discriminators, U-Net segmenter, losses, image pool
    model.py       wiring and the optimisation step (reads like the paper's objective)
    options.py     CycleGANOptions: every tunable, defaults = the seed's
    preprocess.py  volume transforms, each next to its inverse
    data.py        FLARE folders or in-memory arrays -> cached preprocessed volumes -> unpaired slice dataset
    train.py       training loop (from folders or case lists), checkpoints, resume
    translate.py   CT volumes -> synthetic target volumes with the CT labels (FLARE layout)
    quality.py     Dice / structure preservation / cycle error, PNG grids
    __main__.py    `python -m training.cyclegan train|translate`
"""
from .options import CycleGANOptions

__all__ = ["CycleGANOptions"]
