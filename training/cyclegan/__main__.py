"""Command line: `python -m training.cyclegan train ...` and `python -m training.cyclegan translate ...`.

    train      --ct-images DIR --ct-labels DIR --target-images DIR --out DIR [--target-modality mri|pet] [--plain]
               [--epochs N] [--device cpu|cuda] [--options FILE.json] [--target-labels DIR] [--<option> VALUE ...]
    translate  --checkpoint CKPT --ct-images DIR --ct-labels DIR --out DIR [--device ...] [--batch-size N]
               [--overwrite]

Every field of CycleGANOptions is a flag (`--slice-size 288`, `--ngf 64`, `--body-crop/--no-body-crop`, ...);
values from `--options` are read first and flags given on the command line override them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from .options import TARGET_MODALITIES, CycleGANOptions


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options (CycleGANOptions; defaults = the seed's)")
    hints = typing.get_type_hints(CycleGANOptions)
    for f in dataclasses.fields(CycleGANOptions):
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        help_ = f"default {f.default!r}"
        if f.name == "target_modality":
            group.add_argument(flag, choices=TARGET_MODALITIES, default=None, help=help_)
        elif tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif typing.get_origin(tp) is tuple:
            group.add_argument(flag, type=float, nargs=2, default=None, metavar=("LOW", "HIGH"), help=help_)
        else:
            group.add_argument(flag, type=tp, default=None, help=help_)
    group.add_argument("--plain", action="store_true",
                       help="ablation: plain CycleGAN (no attention discriminator, no segmentation loss on G)")


def _options_from_args(args: argparse.Namespace) -> CycleGANOptions:
    values = (CycleGANOptions() if args.options is None else CycleGANOptions.load(args.options)).to_dict()
    # flags given on the command line override the file (from_dict turns nargs=2 lists into tuples)
    values.update({k: v for k, v in vars(args).items() if k in values and v is not None})
    if args.plain:
        values["attention"] = False
    return CycleGANOptions.from_dict(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.cyclegan",
                                     description="Organ Attention CycleGAN: CT -> MRI/PET translation for FLARE")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train (or resume) one CT -> target model")
    tr.add_argument("--ct-images", type=Path, required=True, help="CT images <case>_0000.nii.gz")
    tr.add_argument("--ct-labels", type=Path, required=True, help="CT label maps <case>.nii.gz")
    tr.add_argument("--target-images", type=Path, required=True, help="unlabelled target-modality images")
    tr.add_argument("--target-labels", type=Path, default=None,
                    help="optional target label maps, used only for the quality numbers (target_dice)")
    tr.add_argument("--out", type=Path, required=True, help="run folder (resumed when it holds a checkpoint)")
    tr.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    tr.add_argument("--options", type=Path, default=None, help="JSON file of CycleGANOptions fields")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    _add_option_flags(tr)

    tl = sub.add_parser("translate", help="labelled CT volumes -> synthetic target volumes + copied labels")
    tl.add_argument("--checkpoint", type=Path, required=True)
    tl.add_argument("--ct-images", type=Path, required=True)
    tl.add_argument("--ct-labels", type=Path, required=True)
    tl.add_argument("--out", type=Path, required=True, help="writes OUT/images and OUT/labels")
    tl.add_argument("--device", default="cpu")
    tl.add_argument("--batch-size", type=int, default=8, help="slices per forward pass")
    tl.add_argument("--overwrite", action="store_true", help="redo cases whose outputs exist")
    tl.add_argument("--quiet", action="store_true")
    tl.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch
        torch.set_num_threads(max(1, args.threads))
    try:
        if args.command == "train":
            from .train import train
            opts = _options_from_args(args)
            quality = train(args.ct_images, args.ct_labels, args.target_images, args.out, opts, device=args.device,
                            target_labels=args.target_labels, progress=not args.quiet)
            summary = {k: quality[k]["mean"] if isinstance(quality.get(k), dict) else quality.get(k)
                       for k in ("segmentation_dice", "cycle_mae_hu", "target_dice") if k in quality}
            print(json.dumps({"quality": str(Path(args.out) / "quality.json"), **summary}))
        else:
            from .translate import translate
            written = translate(args.checkpoint, args.ct_images, args.ct_labels, args.out, device=args.device,
                                batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.quiet)
            print(json.dumps({"out": str(args.out), "written": written}))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
