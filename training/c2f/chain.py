"""The C2F training chain as runner steps: convert -> plan -> train coarse, train fine -> export.

One description (`C2FChain`) gives the `python -m training.c2f` command line of every step. The benchmark runs
them as commands (each in its own process, so that several rows can train at once); self-training runs the same
command lines in its own process (`cli.main`, e.g. so that a test can interrupt a training). Both therefore share
one chain, one CLI and one resume rule: the runner's done markers record each command line, and a training that
stopped half-way goes on from nnU-Net's latest checkpoint (`train --resume`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from training.runner import Step

from .config import STAGES
from .train import DEFAULT_TRAINER

PY = sys.executable
CHAIN = ("convert", "plan", *STAGES, "export")


def _flag(flag: str, value) -> list[str]:
    """`flag value` for a value that is set, nothing for None."""
    return [] if value is None else [flag, str(value)]


@dataclass(frozen=True)
class StageTraining:
    """How long one stage trains and what it starts from (None: the trainer's own)."""

    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None
    time_budget_s: float | None = None
    pretrained: str | None = None   # weights that start the training (every layer): self-training

    def args(self) -> list[str]:
        return [*_flag("--epochs", self.epochs), *_flag("--iterations", self.iterations),
                *_flag("--val-iterations", self.val_iterations), *_flag("--time-budget", self.time_budget_s),
                *_flag("--pretrained", self.pretrained)]


@dataclass(frozen=True)
class C2FChain:
    work: Path                              # nnUNet_raw / preprocessed / results live here
    sources: tuple[str, ...]                # NAME=IMAGES[,LABELS] (convert --source)
    out: Path                               # the model folder export writes
    name: str
    description: str = ""
    optional_sources: tuple[str, ...] = ()  # skipped when they hold no labelled case (convert --optional-source)
    spec: Path | None = None                # C2FSpec JSON (None: the built-in spec)
    dataset_id: int = 501
    trainer: str = DEFAULT_TRAINER
    lr: float | None = None
    device: str = "cuda"
    num_gpus: int = 1
    threads: int | None = None              # torch CPU threads per training
    workers: int = 1                        # conversion / preprocessing processes
    da_workers: int | None = None           # nnU-Net data augmentation processes
    coarse: StageTraining = StageTraining()
    fine: StageTraining = StageTraining()
    modalities: tuple[str, ...] = ("MRI", "PET")
    onnx: bool = True
    provenance: Path | None = None          # JSON added to the card's provenance
    settings_from: Path | None = None       # model folder whose TTA / ROI / clean-up settings the card keeps

    def _common(self) -> list[str]:
        return ["--work", str(self.work), *(["--dataset-id", str(self.dataset_id)] if self.dataset_id != 501 else [])]

    def commands(self) -> dict[str, list[str]]:
        """Step -> the arguments of `python -m training.c2f` (without the interpreter)."""
        spec = _flag("--spec", self.spec)
        src = [a for s in self.sources for a in ("--source", s)]
        src += [a for s in self.optional_sources for a in ("--optional-source", s)]
        cmds = {"convert": ["convert", *self._common(), *spec, "--workers", str(self.workers), *src],
                "plan": ["plan", *self._common(), "--workers", str(self.workers)]}
        for stage in STAGES:
            run = self.coarse if stage == "coarse" else self.fine
            cmds[stage] = ["train", *self._common(), "--stage", stage, "--trainer", self.trainer,
                           *_flag("--lr", self.lr), "--device", self.device,
                           *(["--num-gpus", str(self.num_gpus)] if self.num_gpus != 1 else []),
                           *_flag("--workers", self.da_workers), *run.args(), "--resume",
                           *_flag("--threads", self.threads)]
        cmds["export"] = ["export", *self._common(), "--trainer", self.trainer, "--out", str(self.out),
                          "--name", self.name, "--description", self.description, "--modalities", *self.modalities,
                          *([] if self.onnx else ["--no-onnx"]), *_flag("--provenance", self.provenance),
                          *_flag("--settings-from", self.settings_from)]
        return cmds


def _in_process(argv: list[str]) -> None:
    from .cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"python -m training.c2f {' '.join(argv)}: exit code {code}")


def chain_steps(prefix: str, chain: C2FChain, deps: tuple[str, ...] = (), export_deps: tuple[str, ...] = (),
                in_process: bool = False, gpu: bool = True) -> list[Step]:
    """Runner steps `<prefix>convert`, `plan`, `coarse`, `fine`, `export`; convert waits for `deps`, export also
    for `export_deps` (e.g. the step that writes the provenance file). `in_process`: run each command line in this
    process (the marker then records it as the step's settings) instead of a process of its own."""
    cmds = chain.commands()
    needs = {"convert": deps, "plan": (f"{prefix}convert",), "coarse": (f"{prefix}plan",),
             "fine": (f"{prefix}plan",), "export": (f"{prefix}coarse", f"{prefix}fine", *export_deps)}
    steps = []
    for name in CHAIN:
        argv = cmds[name]
        run = (dict(func=lambda a=argv: _in_process(a), settings={"command": ["training.c2f", *argv]}) if in_process
               else dict(argv=[PY, "-m", "training.c2f", *argv]))
        steps.append(Step(f"{prefix}{name}", needs[name], gpu=name in STAGES and gpu, **run))
    return steps
