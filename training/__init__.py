"""flare-uda training tree: CycleGAN translation, coarse-to-fine nnU-Net training, self-training, export."""
