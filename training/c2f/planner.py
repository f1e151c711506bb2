"""Step 2: plans for one converted stage dataset, then nnU-Net's own preprocessing of its cases.

The plans are generated from the stage's `StageSpec` (recorded in the raw dataset.json by convert.py): target
spacing = the spacing the data already have, NoNormalization (the data are already normalised), identity
transpose, PlainConvUNet of the spec. With those, nnU-Net's DefaultPreprocessor only crops to the non-zero
bounding box (a no-op on normalised data, which is non-zero almost everywhere) and samples foreground locations;
the voxels reach the network exactly as the engine prepares them.
"""
from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from inference.atomic import copy_file, write_json
from inference.config import Architecture

from .config import C2FSpec, StageSpec

PLANS_NAME = "C2FPlans"
CONFIGURATION = "3d_fullres"


def read_raw_dataset(raw_folder: Path) -> tuple[dict[str, Any], C2FSpec, str]:
    """(dataset.json, spec, stage name) of a dataset written by convert.py."""
    ds = json.loads((Path(raw_folder) / "dataset.json").read_text())
    if "c2f" not in ds:
        raise ValueError(f"{raw_folder}: dataset.json has no 'c2f' block (not written by training.c2f convert)")
    return ds, C2FSpec.from_dict(ds["c2f"]["spec"]), ds["c2f"]["stage"]


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


def plans_dict(*, dataset_name: str, plans_name: str, planner: str, arch: Architecture, spacing, patch_size,
               median_shape, batch_size: int, normalization: str, batch_dice: bool,
               intensity_properties: dict[str, Any]) -> dict[str, Any]:
    """An nnU-Net v2 plans dict with one 3d_fullres configuration (identity transpose, nnU-Net's resampling)."""
    spacing = [float(s) for s in spacing]
    median_shape = [int(v) for v in median_shape]
    config = {
        "data_identifier": f"{plans_name}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": [int(p) for p in patch_size],
        "median_image_size_in_voxels": median_shape,
        "spacing": spacing,
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": architecture_plans(arch),
        "batch_dice": batch_dice,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": median_shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: config},
        "experiment_planner_used": planner,
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity_properties,
    }


def fingerprint(raw_folder: Path, ids: list[str], file_ending: str, max_fg_samples: int = 10000) -> dict[str, Any]:
    """nnU-Net's dataset fingerprint (shapes, spacings, foreground intensity statistics) of the raw images."""
    shapes, spacings, fg = [], [], []
    rng = np.random.default_rng(1234)
    for cid in tqdm(ids, desc="fingerprint", unit="case"):
        img = sitk.ReadImage(str(Path(raw_folder) / "imagesTr" / f"{cid}_0000{file_ending}"))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(raw_folder) / "labelsTr" / f"{cid}{file_ending}")))
        arr = sitk.GetArrayFromImage(img)
        shapes.append(list(arr.shape))
        spacings.append([float(s) for s in reversed(img.GetSpacing())])
        vals = arr[lab > 0]
        if vals.size:
            fg.append(rng.choice(vals, min(max_fg_samples, vals.size), replace=False))
    v = np.concatenate(fg) if fg else np.zeros(1, dtype=np.float32)
    props = {"max": float(v.max()), "mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
             "percentile_00_5": float(np.percentile(v, 0.5)), "percentile_99_5": float(np.percentile(v, 99.5)),
             "std": float(v.std())}
    return {"foreground_intensity_properties_per_channel": {"0": props},
            "median_relative_size_after_cropping": 1.0, "shapes_after_crop": shapes, "spacings": spacings}


def make_plans(dataset_name: str, stage: StageSpec, fp: dict[str, Any]) -> dict[str, Any]:
    """The plans dict (nnU-Net v2 format) for a stage whose data already sit at `stage.spacing_mm`."""
    return plans_dict(
        dataset_name=dataset_name, plans_name=PLANS_NAME, planner="training.c2f.planner",
        arch=stage.network.architecture(), spacing=stage.spacing_mm, patch_size=stage.patch_size,
        median_shape=[int(round(v)) for v in np.median(np.array(fp["shapes_after_crop"]), 0)],
        batch_size=stage.batch_size, normalization="NoNormalization", batch_dice=False,
        intensity_properties=fp["foreground_intensity_properties_per_channel"])


def plan_and_preprocess(raw_folder: Path, preprocessed_dir: Path, workers: int = 1) -> Path:
    """Write `preprocessed_dir/<dataset>/{dataset.json, dataset_fingerprint.json, C2FPlans.json}` and the
    preprocessed cases (nnU-Net's DefaultPreprocessor; `workers` processes). Resumable: cases already
    preprocessed are skipped.

    nnU-Net must already point at the folders (nnunet_env.bind_folders). Returns the preprocessed dataset folder.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw_folder = Path(raw_folder)
    ds, spec, stage_name = read_raw_dataset(raw_folder)
    stage = spec.stage(stage_name)
    ending = ds["file_ending"]
    ids = raw_cases(raw_folder, ending)
    out = Path(preprocessed_dir) / raw_folder.name
    out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(raw_folder, ids, ending)
    plans = make_plans(raw_folder.name, stage, fp)
    write_json(out / "dataset.json", ds)
    write_json(out / "dataset_fingerprint.json", fp)
    write_json(out / f"{PLANS_NAME}.json", plans)

    pm = PlansManager(plans)
    cm = pm.get_configuration(CONFIGURATION)
    data_dir = out / cm.data_identifier
    data_dir.mkdir(exist_ok=True)
    gt_dir = out / "gt_segmentations"
    gt_dir.mkdir(exist_ok=True)
    todo = []
    for cid in ids:
        seg_file = raw_folder / "labelsTr" / f"{cid}{ending}"
        if not (gt_dir / seg_file.name).is_file():
            copy_file(seg_file, gt_dir / seg_file.name)
        if not (data_dir / f"{cid}.pkl").is_file():  # the .pkl is written last by nnU-Net's save_case
            todo.append((str(data_dir / cid), str(raw_folder / "imagesTr" / f"{cid}_0000{ending}"), str(seg_file)))
    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc=f"preprocess {stage_name}", unit="case") as bar:
        if workers <= 1:
            for job in todo:
                _preprocess_case(plans, ds, *job)
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for fut in as_completed([pool.submit(_preprocess_case, plans, ds, *job) for job in todo]):
                    fut.result()
                    bar.update()
    return out


def _preprocess_case(plans: dict[str, Any], ds: dict[str, Any], out_truncated: str, image: str, seg: str) -> None:
    """nnU-Net's DefaultPreprocessor.run_case_save for one case (module level: runs in worker processes)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    DefaultPreprocessor(verbose=False).run_case_save(out_truncated, [image], seg, pm, pm.get_configuration(CONFIGURATION), ds)
