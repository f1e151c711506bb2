"""nnU-Net's folder settings and trainer lookup, handled at run time from our arguments.

nnU-Net reads nnUNet_raw / nnUNet_preprocessed / nnUNet_results from the environment when `nnunetv2.paths` is
first imported, and its modules copy those values into their own globals. `bind_folders` sets the variables (for
processes nnU-Net spawns) and rebinds the copies in every nnunetv2 module already imported, so one Python process
can use the folders its caller names (nnU-Net offers no other way). Training instantiates our trainer classes
directly (`find_trainer`). Only nnU-Net's own tools that look a trainer up by name from a checkpoint (its
`nnUNetPredictor`, used by the parity test) need `register_trainers`: it adds our classes to the namespace of
`nnunetv2.training.nnUNetTrainer.nnUNetTrainer` in this process (nnU-Net 2.6.0's lookup only searches there); no
file of nnU-Net is written or changed.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

FOLDER_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class NnunetFolders:
    raw: Path
    preprocessed: Path
    results: Path

    def as_env(self) -> dict[str, str]:
        return dict(zip(FOLDER_VARS, (str(self.raw), str(self.preprocessed), str(self.results)), strict=True))


def bind_folders(folders: NnunetFolders, cpu_workers: int | None = None) -> None:
    """Point nnU-Net at `folders` (environment + already-imported module globals).

    `cpu_workers` sets nnUNet_n_proc_DA / nnUNet_def_n_proc (data augmentation and helper processes).
    """
    env = folders.as_env()
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    os.environ.setdefault("nnUNet_compile", "f")
    if cpu_workers is not None:
        os.environ["nnUNet_n_proc_DA"] = str(cpu_workers)
        os.environ["nnUNet_def_n_proc"] = str(max(1, cpu_workers))
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "nnunetv2" or name.startswith("nnunetv2.")):
            for var in env.keys() & vars(module).keys():   # the module's own copies of the variables
                setattr(module, var, env[var])
    if "nnunetv2.configuration" in sys.modules and cpu_workers is not None:
        sys.modules["nnunetv2.configuration"].default_num_processes = max(1, cpu_workers)


def register_trainers() -> None:
    """Make training.c2f.trainers' classes findable by nnU-Net's own trainer lookup in this process (idempotent):
    for nnU-Net's predictor on our trained folders; training does not need it."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as host

    from . import trainers

    for name in trainers.__all__:
        setattr(host, name, getattr(trainers, name))


def find_trainer(name: str):
    """The trainer class called `name`: ours (training.c2f.trainers) directly, nnU-Net's own through nnU-Net's
    lookup; nothing is added to nnU-Net's modules for training."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from . import trainers

    if name in trainers.__all__:
        return getattr(trainers, name)
    cls = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), name,
                                      "nnunetv2.training.nnUNetTrainer")
    if cls is None:
        raise LookupError(f"no nnU-Net trainer class called {name!r}")
    return cls
