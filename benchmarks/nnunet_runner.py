"""nnU-Net v2's default predictor on a folder, in a fresh process (the side-by-side benchmark's nnU-Net command).

    python benchmarks/nnunet_runner.py INPUT_DIR OUTPUT_DIR --model MODEL_DIR [--device cpu|cuda]

MODEL_DIR is an nnU-Net trained-model folder (dataset.json, plans.json, fold_0/checkpoint_final.pth).
nnUNetPredictor is built with its default settings (tile_step_size 0.5, Gaussian weighting, mirroring over the
checkpoint's axes, perform_everything_on_device True) and runs predict_from_files with its default worker counts.
nnU-Net's own folder variables (nnUNet_raw/_preprocessed/_results) are set in THIS process only, to an empty
temporary folder, so that importing nnunetv2 does not warn; prediction does not read them.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input_dir")
    p.add_argument("output_dir")
    p.add_argument("--model", required=True, help="nnU-Net trained-model folder")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--fold", default="0")
    args = p.parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="nnunet_runner_")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(var, scratch)
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device(args.device))  # every other setting: nnU-Net's default
    predictor.initialize_from_trained_model_folder(args.model, use_folds=(args.fold,),
                                                   checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files(args.input_dir, args.output_dir, save_probabilities=False, overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
