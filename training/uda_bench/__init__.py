"""The end-to-end UDA benchmark on real MRI (CHAOS T2): rows (1) source only, (2) + Organ Attention CycleGAN,
(2b) + plain CycleGAN, (3) + dual-stage filtered self-training, (4) target labels (upper bound)."""
