"""Two consecutive self-training cycles end to end on tiny synthetic data on the CPU (python -m training.selftrain
cycle): predict -> filter -> training labels (PET: ignore label) -> c2f convert -> plan -> train coarse + fine from
the best model's weights -> export; the second cycle starts from the first cycle's model; a rerun does no work.

The starting "CT models" are random PlainConvUNets of the tiny spec whose output layer is calibrated (each class's
logit standardised on a sample scan) so that they predict every organ somewhere: the filter's class-number rule
then passes without a trained model. Best and second-best share their weights (Dice 1), so `--top-k 2` decides
which MRI scans are kept (ties by case name), a selection the test can predict.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from inference import normalization, resample
from inference.config import TTA, PostprocessConfig, RoiConfig, StageConfig
from inference.model_folder import load_model_folder
from inference.network import build_network
from inference.pipeline import segment_image
from helpers import tiny_spec, write_image
from phantoms import organ_grid_case
from training.export import export_model
from training.selftrain.__main__ import main
from training.selftrain.cycle import (CycleError, TargetSet, parse_labelled, train_labels, training_spec)
from training.selftrain.stats import compute_stats, save_stats

SPACING = (3.0, 2.0, 2.0)  # numpy z, y, x


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(arr, path, spacing=tuple(reversed(SPACING)))


def write_labelled(folder: Path, prefix: str, seeds) -> tuple[Path, Path]:
    for i, seed in enumerate(seeds):
        img, lab = organ_grid_case(seed)
        _write(img, folder / "images" / f"{prefix}{i}_0000.nii.gz")
        _write(lab, folder / "labels" / f"{prefix}{i}.nii.gz")
    return folder / "images", folder / "labels"


def calibrated_model(folder: Path, seed: int, sample: np.ndarray) -> Path:
    """Random tiny-spec nets whose last layer standardises each class logit on `sample` (TEST ONLY)."""
    spec = tiny_spec()
    torch.manual_seed(seed)
    stages = {}
    for name in ("coarse", "fine"):
        st = spec.stage(name)
        net = build_network(st.network.architecture(), 14).eval()
        params = normalization.resolve(st.normalization, normalization.stats_sample(sample))
        x = params.apply(resample.resample_linear(sample, resample.shape_at_spacing(sample.shape, SPACING,
                                                                                   st.spacing_mm)))
        x = np.pad(x, [(0, (-s) % 4) for s in x.shape])
        with torch.no_grad():
            logits = net(torch.from_numpy(np.ascontiguousarray(x[None, None], dtype=np.float32)))[0]
            mean, std = logits.mean(dim=(1, 2, 3)), logits.std(dim=(1, 2, 3))
            seg = net.decoder.seg_layers[-1]
            seg.weight /= std.view(-1, 1, 1, 1, 1)
            seg.bias.copy_((seg.bias - mean) / std)
        stages[name] = (net, StageConfig(spacing_mm=st.spacing_mm, patch_size=st.patch_size,
                                         normalization=st.normalization, architecture=st.network.architecture(),
                                         label_ids=tuple(range(14)), tta=TTA(), step_size=0.5))
    return export_model(folder, name=folder.name, description="calibrated random test model (never shipped)",
                        modalities=("MRI", "PET"), stages=stages, onnx=False, provenance={"training": "none"},
                        # distinctive ROI cap / regrowth rounds / connectivity (no effect on these small phantoms):
                        # the self-trained model must carry them over
                        roi=RoiConfig(margin_mm=spec.margin_mm, max_extent_mm=(900.0, 900.0, 900.0),
                                      regrow_rounds=5),
                        postprocess=PostprocessConfig(connectivity=18))


def _cycle_args(root: Path, work: str, best: str, second: str, out: str, *extra: str) -> list[str]:
    return ["cycle", "--work", str(root / work), "--ct", f"{root}/ct/images,{root}/ct/labels",
            "--synthetic", f"synmri={root}/syn/images,{root}/syn/labels",
            "--targets", f"mr={root}/mr:mri", f"pet={root}/pet:pet",
            "--weights", str(root / "weights"), "--best", best, "--second", second, "--extra", "ct_extra",
            "--stats", str(root / "stats.json"), "--out-model", out, "--spec", str(root / "spec.json"),
            "--epochs", "1", "--iterations", "2", "--val-iterations", "1", "--device", "cpu", "--threads", "1",
            "--da-workers", "0", "--no-onnx", "--n-sigma", "1000", "--top-k", "2", "--no-progress", *extra]


@pytest.fixture(scope="module")
def cycles(tmp_path_factory):
    root = tmp_path_factory.mktemp("cycle")
    write_labelled(root / "ct", "ct", range(4))
    write_labelled(root / "syn", "syn", range(20, 22))
    for i, seed in enumerate(range(30, 33)):
        _write(organ_grid_case(seed)[0], root / "mr" / f"mr_{'abc'[i]}_0000.nii.gz")
    for i, seed in enumerate(range(40, 42)):
        _write(organ_grid_case(seed)[0], root / "pet" / f"fdg_{'ab'[i]}_0000.nii.gz")
    save_stats(compute_stats(root / "ct" / "labels", progress=False), root / "stats.json")
    (root / "spec.json").write_text(json.dumps(tiny_spec().to_dict()))
    sample = organ_grid_case(0)[0]
    calibrated_model(root / "weights" / "ct_best", 0, sample)
    calibrated_model(root / "weights" / "ct_second", 0, sample)  # same weights: Dice 1, vote = best's labels
    calibrated_model(root / "weights" / "ct_extra", 1, sample)
    assert main(_cycle_args(root, "w1", "ct_best", "ct_second", "st_c1")) == 0
    # cycle 2 (2 epochs) is interrupted at the end of its fine training, then the same command finishes it
    from training.c2f.trainers import nnUNetTrainerC2F

    original_end = nnUNetTrainerC2F.on_train_end

    def crash_fine(self):
        if self.plans_manager.dataset_name.endswith("Fine"):
            raise KeyboardInterrupt("simulated interruption before checkpoint_final")
        original_end(self)

    # (the calibrated random nets react strongly to the tiny cycle-1 update: a lower Dice bar keeps cases in)
    args2 = _cycle_args(root, "w2", "st_c1", "ct_best", "st_c2", "--epochs", "2", "--dice-threshold", "0.5")
    nnUNetTrainerC2F.on_train_end = crash_fine
    try:
        with pytest.raises(KeyboardInterrupt):
            main(args2)
    finally:
        nnUNetTrainerC2F.on_train_end = original_end
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        assert main(args2) == 0
    return root, log.getvalue()


def _dataset(root: Path, work: str, stage: str) -> dict:
    name = {"coarse": "Dataset501_FLAREc2fCoarse", "fine": "Dataset502_FLAREc2fFine"}[stage]
    return json.loads((root / work / "nnUNet_raw" / name / "dataset.json").read_text())


def test_filtered_sets_are_in_the_training_set_with_the_ignore_label_for_pet(cycles):
    root, _ = cycles
    manifest = json.loads((root / "w1" / "pseudo" / "mr" / "manifest.json").read_text())
    assert [c["case"] for c in manifest["cases"]] == ["mr_a", "mr_b"]  # top-k 2 of 3 (Dice ties: by name)
    assert manifest["models"][0]["name"] == "ct_best"
    pet_manifest = json.loads((root / "w1" / "pseudo" / "pet" / "manifest.json").read_text())
    assert [c["case"] for c in pet_manifest["cases"]] == ["fdg_a", "fdg_b"]
    for stage, per_case in (("coarse", 1), ("fine", 2)):
        ds = _dataset(root, "w1", stage)
        sources = ds["c2f"]["case_source"]
        cases = {c.split("_crop")[0] for c in sources}
        assert cases == {"ct_ct0", "ct_ct1", "ct_ct2", "ct_ct3", "synmri_syn0", "synmri_syn1", "mr_mr_a", "mr_mr_b",
                         "pet_fdg_a", "pet_fdg_b"}
        assert "mr_mr_c" not in cases and ds["numTraining"] == 10 * per_case
        assert ds["labels"]["ignore"] == 14 and ds["labels"]["left_kidney"] == 13
    raw = root / "w1" / "nnUNet_raw" / "Dataset501_FLAREc2fCoarse" / "labelsTr"
    pet = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "pet_fdg_a.nii.gz")))).tolist()
    assert set(pet) <= {1, 2, 3, 13, 14} and 14 in pet and 1 in pet and 0 not in pet
    mr = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "mr_mr_a.nii.gz")))).tolist()
    assert 14 not in mr and len(mr) >= 10
    ct = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "ct_ct0.nii.gz")))).tolist()
    assert ct == list(range(14))


def test_new_model_loads_segments_and_names_the_cycle_and_sources(cycles):
    root, _ = cycles
    folder = load_model_folder(root / "weights" / "st_c1", verify=True)
    prov = folder.card.provenance
    st = prov["selftrain"]
    assert st["cycle"] == 1 and st["models"]["best"]["name"] == "ct_best"
    assert set(st["sources"]["pseudo_labelled"]) == {"mr", "pet"}
    assert st["sources"]["pseudo_labelled"]["mr"]["cases"] == 2 and st["ignore_label"] == 14
    assert set(st["sources"]["synthetic"]) == {"synmri"} and st["lr"] == 1e-6
    assert set(prov["training"]["fine"]["sources"]) == {"ct", "synmri", "mr", "pet"}
    assert prov["training"]["fine"]["trainer"] == "nnUNetTrainerC2F"
    assert folder.card.fine.label_ids == tuple(range(14))  # the ignore label is not an output
    best = load_model_folder(root / "weights" / "ct_best").card
    assert folder.card.roi.max_extent_mm == best.roi.max_extent_mm == (900.0, 900.0, 900.0)
    assert folder.card.roi.regrow_rounds == 5 and folder.card.roi.regrow_mm == best.roi.regrow_mm
    assert folder.card.postprocess == best.postprocess and folder.card.postprocess.connectivity == 18
    img, _ = organ_grid_case(99)
    image = sitk.GetImageFromArray(img)
    image.SetSpacing(tuple(reversed(SPACING)))
    out = sitk.GetArrayFromImage(segment_image(image, root / "weights", model="st_c1", modality="MRI",
                                               device="cpu", backend="torch"))
    assert out.shape == img.shape and set(np.unique(out).tolist()) <= set(range(14)) and out.any()


def test_training_started_from_the_best_models_weights_every_layer(cycles):
    """lr 1e-6 for 2 iterations: the new weights differ from the best model's by far less than a fresh init
    would (the segmentation heads included, which nnU-Net's own pretrained loading would have re-initialised)."""
    root, _ = cycles
    for stage in ("coarse", "fine"):
        start = torch.load(root / "weights" / "ct_best" / f"{stage}.pt")
        new = torch.load(root / "weights" / "st_c1" / f"{stage}.pt")
        assert start.keys() == new.keys()
        diffs = {k: float((new[k].float() - start[k].float()).abs().max()) for k in start}
        assert max(diffs.values()) < 1e-3, max(diffs.items(), key=lambda kv: kv[1])
        assert any(v > 0 for v in diffs.values())  # it did train
        assert any("seg_layers" in k for k in diffs)


def _train_record(root: Path, work: str, stage: str) -> dict:
    name = {"coarse": "Dataset501_FLAREc2fCoarse", "fine": "Dataset502_FLAREc2fFine"}[stage]
    return json.loads((root / work / "nnUNet_results" / name / "nnUNetTrainerC2F__C2FPlans__3d_fullres" /
                       "fold_all" / "c2f_train_args.json").read_text())


def test_second_cycle_uses_the_first_cycles_model_as_best(cycles):
    root, _ = cycles
    manifest = json.loads((root / "w2" / "pseudo" / "pet" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["st_c1", "ct_best", "ct_extra"]
    st = load_model_folder(root / "weights" / "st_c2", verify=True).card.provenance["selftrain"]
    assert st["cycle"] == 2 and st["models"]["best"]["name"] == "st_c1"
    assert st["models"]["second"]["name"] == "ct_best"
    assert Path(st["start_weights"]["fine"]["file"]) == (root / "weights" / "st_c1" / "fine.pt").resolve()
    assert _train_record(root, "w2", "coarse")["pretrained"].endswith("st_c1/coarse.pt")


def test_interrupted_cycle_resumes_where_it_stopped(cycles):
    root, log = cycles
    skipped = next(line for line in log.splitlines() if "finished earlier, skipped:" in line)
    assert skipped.split("skipped: ")[1].split(", ") == [
        "predict.mr", "filter.mr", "predict.pet", "filter.pet", "labels", "spec", "convert", "plan", "coarse"]
    assert "fine: resuming from the latest checkpoint" in log and "coarse: " not in log
    fine, coarse = _train_record(root, "w2", "fine"), _train_record(root, "w2", "coarse")
    assert fine["continue_training"] is True and fine["pretrained"] is None
    assert coarse["continue_training"] is False
    ckpt = torch.load(root / "w2" / "nnUNet_results" / "Dataset502_FLAREc2fFine" /
                      "nnUNetTrainerC2F__C2FPlans__3d_fullres" / "fold_all" / "checkpoint_final.pth",
                      map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 2
    assert "3 step(s) run, 9 finished earlier" in log


def test_rerun_does_no_work_and_a_changed_setting_reruns_what_it_defines(cycles, capsys):
    root, _ = cycles
    state = root / "w1" / "state"
    markers = {p.name: p.read_bytes() for p in state.iterdir()}
    card = root / "weights" / "st_c1" / "model.json"
    mtime = card.stat().st_mtime_ns
    capsys.readouterr()
    assert main(_cycle_args(root, "w1", "ct_best", "ct_second", "st_c1")) == 0
    assert "0 step(s) run, 12 finished earlier" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in state.iterdir()} == markers and card.stat().st_mtime_ns == mtime
    # an existing model folder that another work folder wrote is never overwritten
    assert main(_cycle_args(root, "w3", "ct_best", "ct_second", "st_c2", "--top-k", "1")) == 2
    assert "st_c2: a model exists there" in capsys.readouterr().out
    assert not (root / "w3").exists()  # refused before any work
    # same work folder, another filter setting: the filters and everything below them run again (from the start
    # weights: the old checkpoints belong to the old plans), the predictions are reused
    assert main(_cycle_args(root, "w1", "ct_best", "ct_second", "st_c1", "--top-k", "1")) == 0
    out = capsys.readouterr().out
    assert "9 step(s) run, 3 finished earlier" in out and "resuming" not in out
    assert "coarse: starting from" in out and "fine: starting from" in out
    st = load_model_folder(root / "weights" / "st_c1", verify=True).card.provenance["selftrain"]
    assert st["filter"]["top_k"] == 1 and st["sources"]["pseudo_labelled"]["mr"]["cases"] == 1


def test_argument_parsing_and_label_rules(tmp_path):
    t = TargetSet.parse("mr-1=/data/a:b/mri:pet")
    assert (t.name, t.images, t.target_set, t.modality) == ("mr-1", Path("/data/a:b/mri"), "pet", "pet")
    t = TargetSet.parse("chaos=/data/a:b:pet:mri")   # MRI scans, pseudo-labels keep the four PET organs
    assert (t.images, t.target_set, t.modality) == (Path("/data/a:b"), "pet", "mri")
    assert TargetSet("m", tmp_path, "mri").modality == "mri"
    for bad in ("mr=/data", "mr=/data:ct", "m_r=/data:mri", "=/data:mri", "mr=/data:pet:ct"):
        with pytest.raises(CycleError):
            TargetSet.parse(bad)
    assert parse_labelled("/a,/b", "ct", "--ct").name == "ct"
    with pytest.raises(CycleError):
        parse_labelled("/a,/b")  # synthetic needs a name
    spec = tiny_spec()
    assert training_spec(spec, (TargetSet("m", tmp_path, "mri"),), 0).ignore_label is None
    assert training_spec(spec, (TargetSet("p", tmp_path, "pet"),), 0).ignore_label == 14
    assert training_spec(spec, (TargetSet("m", tmp_path, "mri"),), 14).class_ids == tuple(range(14))
    with pytest.raises(CycleError, match="no-majority"):
        training_spec(spec, (TargetSet("m", tmp_path, "mri"),), 20)
    pet = np.array([0, 1, 2, 3, 13], np.uint8)
    assert train_labels(pet, "pet", 0, 14).tolist() == [14, 1, 2, 3, 13]
    mri = np.array([0, 4, 14, 13], np.uint8)
    assert train_labels(mri, "mri", 14, 14).tolist() == [0, 4, 14, 13]
    assert train_labels(np.array([0, 5], np.uint8), "mri", 0, None).tolist() == [0, 5]
    with pytest.raises(CycleError, match="outside"):
        train_labels(np.array([0, 5], np.uint8), "pet", 0, 14)
