"""Step 3: train one stage with nnU-Net (single process, or nnU-Net's DDP across GPUs), resumable.

This is nnU-Net's run_training with two differences: the trainer class comes from training.c2f.trainers (no file
is placed into nnU-Net's package), and the folders and iteration counts are arguments. Multi-GPU uses nnU-Net's
own DDP path: one spawned process per GPU, nnU-Net's setup_ddp (NCCL), its trainer's DDP wrapping, batch split and
loss all-reduce.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from inference.atomic import read_json, write_json
from training.resume import say_restart

from .nnunet_env import NnunetFolders, bind_folders, find_trainer
from .planner import CONFIGURATION, PLANS_NAME

DEFAULT_TRAINER = "nnUNetTrainerC2F"
ARGS_FILE = "c2f_train_args.json"


@dataclass(frozen=True)
class TrainArgs:
    folders: NnunetFolders
    dataset: str  # nnU-Net dataset name, e.g. Dataset501_FLAREc2fCoarse
    trainer: str = DEFAULT_TRAINER
    fold: str = "all"  # "all" or 0..4 (nnU-Net's 5-fold split)
    device: str = "cuda"
    num_gpus: int = 1
    epochs: int | None = None  # None: the trainer class's value
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    initial_lr: float | None = None
    time_budget_s: float | None = None  # stop after the epoch that would overrun this wall-clock budget (seconds)
    continue_training: bool = False
    # weights that start the training (self-training): an nnU-Net checkpoint or an exported <stage>.pt state_dict;
    # ALL layers are loaded, segmentation heads included (nnU-Net's own -pretrained_weights skips the heads)
    pretrained: str | None = None
    validate: bool = False  # nnU-Net's full validation (sliding window over validation cases) after training
    workers: int | None = None  # data augmentation processes (nnUNet_n_proc_DA); 0: in the main process
    threads: int | None = None  # torch CPU threads (1 is fastest on a loaded small CPU; None: torch's default)

    @property
    def fold_value(self) -> int | str:
        return self.fold if self.fold == "all" else int(self.fold)


def output_folder(folders: NnunetFolders, dataset: str, trainer: str = DEFAULT_TRAINER, fold: str = "all") -> Path:
    """Where nnU-Net writes this training's checkpoints."""
    return Path(folders.results) / dataset / f"{trainer}__{PLANS_NAME}__{CONFIGURATION}" / f"fold_{fold}"


# what defines a training run: a checkpoint of another run of these fields is not resumed (`resumable`)
RUN_FIELDS = ("dataset", "trainer", "fold", "epochs", "iterations_per_epoch", "val_iterations_per_epoch",
              "initial_lr", "time_budget_s")


def resumable(args: TrainArgs) -> bool:
    """A checkpoint of this stage that an interrupted run of the same training left: its recorded arguments
    (RUN_FIELDS) are these, and it is newer than the current plans (a re-planned dataset starts over)."""
    fold = output_folder(args.folders, args.dataset, args.trainer, args.fold)
    ckpts = [fold / f for f in ("checkpoint_latest.pth", "checkpoint_final.pth") if (fold / f).is_file()]
    record = read_json(fold / ARGS_FILE)
    plans = Path(args.folders.preprocessed) / args.dataset / f"{PLANS_NAME}.json"
    if not ckpts or not isinstance(record, dict) or not plans.is_file():
        return False
    changed = [k for k in RUN_FIELDS if record.get(k) != getattr(args, k)]
    if changed:   # training.resume's rule: other settings train again from scratch, saying so
        say_restart(fold, changed)
        return False
    if max(c.stat().st_mtime for c in ckpts) <= plans.stat().st_mtime:
        say_restart(fold, ["plans"])
        return False
    return True


def _make_trainer(args: TrainArgs, device):
    from batchgenerators.utilities.file_and_folder_operations import load_json

    cls = find_trainer(args.trainer)
    base = Path(args.folders.preprocessed) / args.dataset
    if not (base / f"{PLANS_NAME}.json").is_file():
        raise FileNotFoundError(f"{base / (PLANS_NAME + '.json')}: run `python -m training.c2f plan` first")
    trainer = cls(plans=load_json(str(base / f"{PLANS_NAME}.json")), configuration=CONFIGURATION,
                  fold=args.fold_value, dataset_json=load_json(str(base / "dataset.json")), device=device)
    for attr, value in (("num_epochs", args.epochs), ("num_iterations_per_epoch", args.iterations_per_epoch),
                        ("num_val_iterations_per_epoch", args.val_iterations_per_epoch),
                        ("initial_lr", args.initial_lr)):
        if value is not None:   # None: the trainer class's value
            setattr(trainer, attr, value)
    if args.time_budget_s is not None:
        if args.time_budget_s <= 0:
            raise ValueError(f"time budget must be > 0 seconds, got {args.time_budget_s}")
        trainer.time_budget_s = float(args.time_budget_s)
    return trainer


def load_start_weights(trainer, path: str | Path) -> None:
    """Load every weight of `path` into the trainer's network (strict: same keys and shapes, seg heads included).

    `path`: an nnU-Net checkpoint (dict with 'network_weights') or a plain state_dict such as an exported
    weights/<model>/<stage>.pt (the engine's PlainConvUNet has dynamic-network-architectures' keys).
    """
    import torch
    from torch._dynamo import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    if not trainer.was_initialized:
        trainer.initialize()
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "network_weights" in state:
        state = state["network_weights"]
    net = trainer.network
    if isinstance(net, DistributedDataParallel):
        net = net.module
    if isinstance(net, OptimizedModule):
        net = net._orig_mod
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the {trainer.plans_manager.dataset_name} network "
                         f"({str(exc).splitlines()[0]})") from None


def _run(args: TrainArgs, device) -> Path:
    import torch
    from nnunetv2.run.run_training import maybe_load_checkpoint

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    trainer = _make_trainer(args, device)
    out = Path(trainer.output_folder)
    if trainer.local_rank == 0:
        write_json(out / ARGS_FILE, {**asdict(args), "folders": args.folders.as_env()})
    if args.pretrained is not None:
        if args.continue_training:
            raise ValueError("--continue and --pretrained exclude each other (pretrained weights only start a run)")
        load_start_weights(trainer, args.pretrained)
    maybe_load_checkpoint(trainer, args.continue_training, False, None)
    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    trainer.run_training()
    if args.validate:
        trainer.perform_actual_validation(False)
    return out


def _ddp_worker(rank: int, args: TrainArgs) -> None:
    import torch
    import torch.distributed as dist

    bind_folders(args.folders, args.workers)
    from nnunetv2.run.run_training import cleanup_ddp, setup_ddp

    setup_ddp(rank, args.num_gpus)
    torch.cuda.set_device(torch.device("cuda", dist.get_rank()))
    _run(args, torch.device("cuda"))
    cleanup_ddp()


def train(args: TrainArgs) -> Path:
    """Train (or resume) one stage; returns the fold folder holding checkpoint_final.pth."""
    bind_folders(args.folders, args.workers)
    import torch

    if args.num_gpus > 1:
        if args.device != "cuda":
            raise ValueError("multi-GPU (DDP) training needs device cuda")
        import torch.multiprocessing as mp
        from nnunetv2.run.run_training import find_free_network_port

        os.environ["MASTER_ADDR"] = "localhost"
        os.environ.setdefault("MASTER_PORT", str(find_free_network_port()))
        mp.spawn(_ddp_worker, args=(args,), nprocs=args.num_gpus, join=True)
        return output_folder(args.folders, args.dataset, args.trainer, args.fold)
    return _run(args, torch.device(args.device))
