"""Step 2: nnU-Net's fingerprint and plans for one converted stage dataset, then nnU-Net's preprocessing of its
cases.

The plans come from nnU-Net's ExperimentPlanner, extended through its hooks with the stage's `StageSpec` (recorded
in the raw dataset.json by convert.py): target spacing = the spacing the data already have, NoNormalization (the
data are already normalised), identity transpose, the spec's patch, batch and PlainConvUNet. With those, nnU-Net's
DefaultPreprocessor only crops to the non-zero bounding box (a no-op on normalised data, which is non-zero almost
everywhere) and samples foreground locations; the voxels reach the network exactly as the engine prepares them.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference.atomic import copy_file
from inference.config import Architecture

from .config import C2FSpec, StageSpec

PLANS_NAME = "C2FPlans"
CONFIGURATION = "3d_fullres"


def read_raw_dataset(raw_folder: Path) -> tuple[dict[str, Any], C2FSpec, str]:
    """(dataset.json, spec, stage name) of a dataset written by convert.py, or of a training output folder (which
    holds nnU-Net's copy of that dataset.json)."""
    ds = json.loads((Path(raw_folder) / "dataset.json").read_text())
    if "c2f" not in ds:
        raise ValueError(f"{raw_folder}: dataset.json has no 'c2f' block (not written by training.c2f convert)")
    return ds, C2FSpec.from_dict(ds["c2f"]["spec"]), ds["c2f"]["stage"]


def run_jobs(func, jobs: list[tuple], workers: int, bar, mp_context=None) -> list:
    """`func(*job)` for every job, in this process (workers <= 1) or in `workers` processes of `mp_context`; `bar`
    advances as each job ends, the first error raises. Returns the results in the order of `jobs`."""
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(func(*job))
            bar.update()
        return results
    with ProcessPoolExecutor(workers, mp_context=mp_context) as pool:
        futs = [pool.submit(func, *job) for job in jobs]
        for fut in as_completed(futs):
            fut.result()
            bar.update()
    return [fut.result() for fut in futs]


def raw_cases(raw_folder: Path, file_ending: str) -> list[str]:
    ids = sorted(p.name[: -len("_0000" + file_ending)] for p in (Path(raw_folder) / "imagesTr").glob("*_0000" + file_ending))
    if not ids:
        raise FileNotFoundError(f"{raw_folder}/imagesTr holds no case")
    return ids


def architecture_plans(arch: Architecture) -> dict[str, Any]:
    """nnU-Net's 'architecture' block (dynamic-network-architectures PlainConvUNet) for `arch`."""
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": arch.n_stages,
            "features_per_stage": list(arch.features_per_stage),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [list(k) for k in arch.kernel_sizes],
            "strides": [list(s) for s in arch.strides],
            "n_conv_per_stage": list(arch.n_conv_per_stage),
            "n_conv_per_stage_decoder": list(arch.n_conv_per_stage_decoder),
            "conv_bias": arch.conv_bias,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": arch.norm_eps, "affine": arch.norm_affine},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},  # negative slope: torch's default 0.01 = Architecture's default
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def c2f_planner_class():
    """nnU-Net's ExperimentPlanner for one converted C2F stage dataset, extended through its hooks: the target
    spacing is the spacing the data already have, NoNormalization, identity transpose, no 3d_lowres, and the
    3d_fullres configuration gets the spec's patch, batch and PlainConvUNet (nnU-Net's own planning of every other
    field is kept: resampling functions, data identifier, 2d configuration, the plans file itself)."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    class _C2FPlanner(ExperimentPlanner):
        def __init__(self, dataset_name: str, stage: StageSpec):
            super().__init__(dataset_name, plans_name=PLANS_NAME, suppress_transpose=True)
            self.stage = stage
            self.lowres_creation_threshold = 0.0   # the coarse stage is a dataset (and a model) of its own

        def determine_fullres_target_spacing(self) -> np.ndarray:
            return np.array(self.stage.spacing_mm, dtype=float)

        def determine_normalization_scheme_and_whether_mask_is_used_for_norm(self):
            return ["NoNormalization"], [False]

        def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                        _cache):
            plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                       approximate_n_voxels_dataset, _cache)
            if len(spacing) == 3:
                plan.update(patch_size=list(self.stage.patch_size), batch_size=self.stage.batch_size,
                            architecture=architecture_plans(self.stage.network.architecture()))
            return plan

    _C2FPlanner.__name__ = _C2FPlanner.__qualname__ = "C2FPlanner"
    return _C2FPlanner


def plan_and_preprocess(raw_folder: Path, preprocessed_dir: Path, workers: int = 1) -> Path:
    """nnU-Net's fingerprint (DatasetFingerprintExtractor) and plans (`c2f_planner_class`) of a converted stage
    dataset, then its preprocessed cases (nnU-Net's DefaultPreprocessor, `workers` processes). Resumable: cases
    already preprocessed are skipped.

    nnU-Net must already point at the folders (nnunet_env.bind_folders), with `raw_folder` inside its nnUNet_raw and
    `preprocessed_dir` its nnUNet_preprocessed. Returns the preprocessed dataset folder.
    """
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw_folder = Path(raw_folder)
    ds, spec, stage_name = read_raw_dataset(raw_folder)
    for var, folder in (("nnUNet_raw", raw_folder.parent), ("nnUNet_preprocessed", Path(preprocessed_dir))):
        if Path(os.environ.get(var, "")).resolve() != folder.resolve():
            raise ValueError(f"{raw_folder}: nnU-Net's {var} is {os.environ.get(var)!r}, not {folder} "
                             "(call nnunet_env.bind_folders first)")
    ending = ds["file_ending"]
    ids = raw_cases(raw_folder, ending)
    out = Path(preprocessed_dir) / raw_folder.name
    out.mkdir(parents=True, exist_ok=True)
    DatasetFingerprintExtractor(raw_folder.name, num_processes=max(1, workers)).run(overwrite_existing=True)
    plans = c2f_planner_class()(raw_folder.name, spec.stage(stage_name)).plan_experiment()

    data_dir = out / PlansManager(plans).get_configuration(CONFIGURATION).data_identifier
    data_dir.mkdir(exist_ok=True)
    gt_dir = out / "gt_segmentations"
    todo = []
    for cid in ids:
        seg_file = raw_folder / "labelsTr" / f"{cid}{ending}"
        if not (gt_dir / seg_file.name).is_file():
            copy_file(seg_file, gt_dir / seg_file.name, mkdir=True)
        if not (data_dir / f"{cid}.pkl").is_file():  # the .pkl is written last by nnU-Net's save_case
            todo.append((str(data_dir / cid), str(raw_folder / "imagesTr" / f"{cid}_0000{ending}"), str(seg_file)))
    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc=f"preprocess {stage_name}", unit="case") as bar:
        run_jobs(_preprocess_case, [(plans, ds, *job) for job in todo], workers, bar,
                 multiprocessing.get_context("spawn"))
    return out


def _preprocess_case(plans: dict[str, Any], ds: dict[str, Any], out_truncated: str, image: str, seg: str) -> None:
    """nnU-Net's DefaultPreprocessor.run_case_save for one case (module level: runs in worker processes)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    DefaultPreprocessor(verbose=False).run_case_save(out_truncated, [image], seg, pm, pm.get_configuration(CONFIGURATION), ds)
