"""Coarse-to-fine training on nnU-Net v2 (training.c2f), end to end on tiny synthetic data on the CPU:
convert -> plan -> train coarse and fine (a few iterations of 3-stage nets) -> interrupted run resumed ->
export -> the engine runs on the export; and parity: for the same exported fine model and ROI crop the engine's
labels agree with nnUNetPredictor's (which applies nnU-Net's own preprocessing to our converted crop).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference import roi
from inference.backends import make_backend
from inference.model_folder import load_model_folder
from inference.pipeline import Segmenter, segment_image
from training.c2f import cli
from training.c2f.config import C2FSpec, default_spec
from training.c2f.convert import Source, jittered_box, load_canonical, stage_arrays, write_volume
from helpers import tiny_spec
from phantoms import write_synthetic_source

DS = 601
COARSE, FINE = "Dataset601_FLAREc2fCoarse", "Dataset602_FLAREc2fFine"
TRAINER = "nnUNetTrainerC2F"
TRAIN_DIR = f"{TRAINER}__C2FPlans__3d_fullres"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(work: Path, stage: str, *extra: str) -> None:
    assert cli.main(["train", "--work", str(work), "--dataset-id", str(DS), "--stage", stage, "--device", "cpu",
                     "--workers", "0", "--threads", "1", "--val-iterations", "1", *extra]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """convert + plan + train both stages; the coarse run is interrupted after its first epoch and resumed."""
    root = tmp_path_factory.mktemp("c2f")
    src = write_synthetic_source(root / "ct", n_cases=4, seed=0)
    spec_file = root / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec().to_dict()))
    work = root / "work"
    assert cli.main(["convert", "--work", str(work), "--dataset-id", str(DS), "--source", f"ct={src}",
                     "--spec", str(spec_file)]) == 0
    assert cli.main(["plan", "--work", str(work), "--dataset-id", str(DS), "--workers", "0"]) == 0

    from training.c2f.trainers import nnUNetTrainerC2F

    original_end = nnUNetTrainerC2F.on_train_end

    def crash(self):
        raise KeyboardInterrupt("simulated interruption before checkpoint_final")

    nnUNetTrainerC2F.on_train_end = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            _train(work, "coarse", "--epochs", "2", "--iterations", "2", "--lr", "1e-2")
    finally:
        nnUNetTrainerC2F.on_train_end = original_end
    fold = work / "nnUNet_results" / COARSE / TRAIN_DIR / "fold_all"
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    _train(work, "coarse", "--epochs", "2", "--iterations", "2", "--lr", "1e-2", "--continue")
    # the fine model must learn enough to predict organs, so parity compares real boundaries
    _train(work, "fine", "--epochs", "1", "--iterations", "150", "--lr", "1e-2")
    weights = root / "weights"
    assert cli.main(["export", "--work", str(work), "--dataset-id", str(DS), "--out", str(weights / "c2f_tiny"),
                     "--fine-tta-axes", "0", "1"]) == 0  # the trainers mirror z, y only
    return {"root": root, "work": work, "src": src, "weights": weights, "model": weights / "c2f_tiny"}


def test_default_spec_matches_the_issue():
    from inference.network import build_network, count_parameters

    spec = default_spec()
    assert 4.0 <= spec.coarse.spacing_mm[0] <= 6.0 and spec.fine.patch_size == (96, 192, 192)
    fine_params = count_parameters(build_network(spec.fine.network.architecture(), len(spec.label_ids)))
    coarse_params = count_parameters(build_network(spec.coarse.network.architecture(), len(spec.label_ids)))
    # the coarse net is as deep as the fine one (a 4-stage 0.35M net collapsed to background, see default_spec)
    # but runs on far fewer voxels: its cost is the patch, not the parameter count
    assert 4_000_000 <= fine_params <= 7_000_000 and coarse_params <= 7_000_000
    assert np.prod(spec.coarse.patch_size) * 5 <= np.prod(spec.fine.patch_size)
    assert C2FSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_jittered_box_is_the_engine_roi_without_jitter_and_stays_within_the_jitter():
    labels = np.zeros((20, 30, 40), np.uint8)
    labels[5:9, 10:20, 12:30] = 3
    spacing, margin = (3.0, 2.0, 1.5), (6.0, 5.0, 4.0)
    rng = np.random.default_rng(0)
    exact = jittered_box(labels, spacing, margin, (0.0, 0.0, 0.0), rng)
    engine = roi.expand_box(roi.foreground_box(labels), margin, spacing, labels.shape)
    assert exact == engine
    for _ in range(50):
        box = jittered_box(labels, spacing, margin, (3.0, 2.0, 2.0), rng)
        lo = jittered_box(labels, spacing, (3.0, 3.0, 2.0), (0.0,) * 3, rng)
        hi = jittered_box(labels, spacing, (9.0, 7.0, 6.0), (0.0,) * 3, rng)
        assert all(h <= b <= l for h, b, l in zip(hi.start, box.start, lo.start, strict=True))
        assert all(l <= b <= h for h, b, l in zip(hi.stop, box.stop, lo.stop, strict=True))
    assert jittered_box(np.zeros((4, 5, 6), np.uint8), spacing, margin, (1.0,) * 3, rng) == roi.Box.whole((4, 5, 6))


def test_source_parsing_and_missing_labels(tmp_path):
    s = Source.parse(f"synmri={tmp_path}/img,{tmp_path}/lab")
    assert s.name == "synmri" and s.labels == tmp_path / "lab"
    assert Source.parse(f"ct={tmp_path}").labels == tmp_path
    with pytest.raises(ValueError):
        Source.parse("no-equals-sign")
    (tmp_path / "a_0000.nii.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError):
        Source.parse(f"ct={tmp_path}").cases()


def test_convert_writes_engine_prepared_arrays_and_plans_that_nnunet_reads(trained):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    work, src = trained["work"], trained["src"]
    spec = tiny_spec()
    case = load_canonical(src / "case01_0000.nii.gz", src / "case01.nii.gz")  # stored x-flipped
    expected, expected_labels = stage_arrays(case, spec.coarse)
    raw = work / "nnUNet_raw" / COARSE
    img = sitk.ReadImage(str(raw / "imagesTr" / "ct_case01_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), expected)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / "ct_case01.nii.gz"))),
                                  expected_labels)
    assert img.GetSpacing() == tuple(reversed(spec.coarse.spacing_mm))
    ds = json.loads((work / "nnUNet_raw" / FINE / "dataset.json").read_text())
    assert ds["numTraining"] == 8 and set(ds["c2f"]["case_source"].values()) == {"ct"}
    plans = json.loads((work / "nnUNet_preprocessed" / FINE / "C2FPlans.json").read_text())
    cm = PlansManager(plans).get_configuration("3d_fullres")
    assert cm.spacing == list(spec.fine.spacing_mm) and cm.normalization_schemes == ["NoNormalization"]
    assert cm.patch_size == list(spec.fine.patch_size)


def test_resumed_training_continues_from_the_last_checkpoint(trained):
    fold = trained["work"] / "nnUNet_results" / COARSE / TRAIN_DIR / "fold_all"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 2 and ckpt["trainer_name"] == TRAINER
    assert len(ckpt["logging"]["train_losses"]) == 2  # epoch 0 from the interrupted run, epoch 1 after resuming
    assert not (fold / "checkpoint_latest.pth").exists()


def test_export_card_provenance_and_engine_run(trained, tmp_path):
    folder = load_model_folder(trained["model"], verify=True)
    card = folder.card
    spec = tiny_spec()
    assert card.fine.spacing_mm == spec.fine.spacing_mm and card.coarse.patch_size == spec.coarse.patch_size
    assert card.roi.margin_mm == spec.margin_mm and card.fine.tta.axes == (0, 1)
    assert card.roi.max_extent_mm == (350.0, 350.0, 400.0)  # the export's default plausibility cap
    assert card.postprocess.lateral_pairs == ((2, 13), (7, 8)) and card.postprocess.caudal_to == ((2, 1), (13, 3))
    prov = card.provenance
    assert prov["nnunetv2"] == "2.6.0" and len(prov["git_commit"]) in (40, 7) or prov["git_commit"] == "unknown"
    assert prov["training"]["coarse"]["epochs_completed"] == 2
    assert prov["training"]["fine"]["iterations_per_epoch"] == 150
    assert prov["training"]["fine"]["training_cases"] == 8
    assert {"coarse.pt", "coarse.onnx", "fine.pt", "fine.onnx"} <= set(card.sha256)

    from phantoms import synthetic_case

    image, _ = synthetic_case(seed=7)
    img = sitk.GetImageFromArray(image)
    img.SetSpacing((2.0, 2.0, 3.0))
    for backend in ("torch", "onnx"):
        out = segment_image(img, trained["weights"], modality="MRI", device="cpu", backend=backend)
        arr = sitk.GetArrayFromImage(out)
        assert arr.shape == image.shape and out.GetSpacing() == img.GetSpacing()
        assert set(np.unique(arr)) <= set(card.fine.label_ids)


def _dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    return 2.0 * np.count_nonzero(x & y) / max(1, np.count_nonzero(x) + np.count_nonzero(y))


def test_parity_engine_vs_nnunet_predictor_on_the_same_roi_crop(trained, tmp_path):
    """Engine fine stage on roi.crop(canon, box) == nnUNetPredictor on our converted crop of the same box.

    The predictor reads the converted NIfTI with nnU-Net's reader and runs nnU-Net's own preprocessing (crop to
    non-zero, resampling to the plans' spacing, NoNormalization), sliding window and 4-flip mirroring (z, y), i.e. the
    path training data take; agreement proves that training sees what the engine feeds the network.
    """
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from training.c2f.nnunet_env import register_trainers

    # an unseen case, stored with a flipped x axis, so orientation handling is part of the chain
    src = write_synthetic_source(tmp_path / "test", n_cases=2, seed=50)
    case = load_canonical(src / "case01_0000.nii.gz", src / "case01.nii.gz")
    spec = tiny_spec()
    box = jittered_box(case.labels, case.spacing_mm, spec.margin_mm, (0.0, 0.0, 0.0), np.random.default_rng(0))

    folder = load_model_folder(trained["model"])
    stage = folder.card.fine
    net = make_backend(folder, "fine", "torch", "cpu", 1)
    engine, _ = Segmenter._run_stage(stage, net, roi.crop(case.image, box), case.spacing_mm, case.stats_sample)

    x, _ = stage_arrays(case, spec.fine, box)
    crop_file = tmp_path / "crop_0000.nii.gz"
    write_volume(x, spec.fine.spacing_mm, crop_file)
    data, props = SimpleITKIO().read_images([str(crop_file)])
    register_trainers()
    predictor = nnUNetPredictor(tile_step_size=stage.step_size, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(
        str(trained["work"] / "nnUNet_results" / FINE / TRAIN_DIR), use_folds=("all",),
        checkpoint_name="checkpoint_final.pth")
    assert tuple(predictor.allowed_mirroring_axes) == stage.tta.axes
    theirs = predictor.predict_single_npy_array(data, props)
    assert theirs.shape == engine.shape

    # organs of at least 100 voxels are compared by Dice: floating-point sums in a different order flip a few
    # argmax ties (Dice 0.9994 seen), which would move the Dice of a 20-voxel stray prediction below any bar;
    # every voxel still counts in the overall agreement
    sizes = {o: int(max((engine == o).sum(), (theirs == o).sum())) for o in range(1, 14)}
    organs = sorted(o for o, n in sizes.items() if n >= 100)
    dice = {o: _dice(engine, theirs, o) for o in organs}
    agreement = float((engine == theirs).mean())
    print("parity Dice per organ:", {o: round(d, 5) for o, d in dice.items()}, "voxels:", sizes,
          "voxel agreement:", agreement)
    assert len(organs) >= 2, f"the fine model predicts too little to compare: {sizes}"
    assert all(d >= 0.99 for d in dice.values()), dice
    assert agreement >= 0.999, agreement

    # control: the same comparison on a crop one voxel off (a preprocessing mismatch) must fail the threshold
    shifted = roi.Box(tuple(a + 1 for a in box.start), tuple(b + 1 for b in box.stop))
    write_volume(stage_arrays(case, spec.fine, shifted)[0], spec.fine.spacing_mm, crop_file)
    data, props = SimpleITKIO().read_images([str(crop_file)])
    off = predictor.predict_single_npy_array(data, props)
    assert off.shape == engine.shape
    assert min(_dice(engine, off, o) for o in organs) < 0.99


def test_sources_merge_into_one_training_set(tmp_path):
    from training.c2f.convert import convert

    ct = write_synthetic_source(tmp_path / "ct", n_cases=2, seed=0)
    syn = write_synthetic_source(tmp_path / "syn", n_cases=1, seed=9)
    out = convert([Source.parse(f"ct={ct}"), Source.parse(f"synmri={syn},{syn}")], tmp_path / "raw", 700,
                  tiny_spec(crops_per_case=1), stages=("coarse",))
    ds = json.loads((out["coarse"] / "dataset.json").read_text())
    assert ds["c2f"]["case_source"] == {"ct_case00": "ct", "ct_case01": "ct", "synmri_case00": "synmri"}
    assert ds["numTraining"] == 3 and set(ds["c2f"]["sources"]) == {"ct", "synmri"}
    assert ds["labels"]["left_kidney"] == 13 and ds["c2f"]["stage"] == "coarse"
    with pytest.raises(ValueError):
        convert([Source.parse(f"ct={ct}"), Source.parse(f"ct={syn}")], tmp_path / "raw2", 700, tiny_spec())


def test_trainers_are_found_ours_directly_nnunets_by_its_lookup_and_cosine_schedule():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from training.c2f.nnunet_env import find_trainer
    from training.c2f.trainers import CosineLRScheduler, nnUNetTrainerC2F

    assert find_trainer("nnUNetTrainerC2F") is nnUNetTrainerC2F and find_trainer("nnUNetTrainer") is nnUNetTrainer
    with pytest.raises(LookupError, match="nnUNetTrainerNope"):
        find_trainer("nnUNetTrainerNope")
    assert nnUNetTrainerC2F.c2f_initial_lr == 1e-5
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineLRScheduler(opt, 1e-3, 10, min_lr=1e-5)
    for epoch, expected in ((0, 1e-3), (5, (1e-3 + 1e-5) / 2), (10, 1e-5)):
        sched.step(epoch)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)


@pytest.mark.parametrize("patch", [(48, 96, 96), (16, 64, 64)])
def test_trainers_never_mirror_left_right(patch):
    """FLARE labels right/left kidneys and adrenals: augmentation and nnU-Net's inference TTA mirror z and y only."""
    from types import SimpleNamespace

    from training.c2f.trainers import LR_AXIS, nnUNetTrainerC2F

    for cls in (nnUNetTrainerC2F,):
        trainer = object.__new__(cls)  # only the augmentation geometry is under test: no plans, no dataset
        trainer.configuration_manager = SimpleNamespace(patch_size=list(patch))
        trainer.print_to_log_file = lambda *a, **k: None
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        assert LR_AXIS == 2 and LR_AXIS not in mirror_axes
        assert set(mirror_axes) == {0, 1} and trainer.inference_allowed_mirroring_axes == mirror_axes
        assert len(initial_patch_size) == 3


def test_a_time_budget_stops_nnunets_own_loop_after_the_epoch_that_spent_it(tmp_path):
    """The trainer extends nnU-Net through hooks only: a budget far below one epoch ends its unmodified
    run_training after the first epoch, with checkpoint_final written as at a normal end."""
    src = write_synthetic_source(tmp_path / "ct", n_cases=2, seed=1)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny_spec().to_dict()))
    work, ds = tmp_path / "work", 611
    assert cli.main(["convert", "--work", str(work), "--dataset-id", str(ds), "--source", f"ct={src}",
                     "--spec", str(spec_file)]) == 0
    assert cli.main(["plan", "--work", str(work), "--dataset-id", str(ds), "--workers", "0"]) == 0
    assert cli.main(["train", "--work", str(work), "--dataset-id", str(ds), "--stage", "coarse", "--device", "cpu",
                     "--workers", "0", "--threads", "1", "--val-iterations", "1", "--epochs", "5", "--iterations",
                     "1", "--time-budget", "0.001"]) == 0
    fold = work / "nnUNet_results" / "Dataset611_FLAREc2fCoarse" / TRAIN_DIR / "fold_all"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 1 and len(ckpt["logging"]["train_losses"]) == 1
    assert not (fold / "checkpoint_latest.pth").exists()
