"""In-plane (2D) C2F training: recipes, patches, the 2D -> card mapping, and a tiny real-data run end to end."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from inference import resample
from inference.config import ModelCardError, StageConfig
from inference.network import build_network
from inference.sliding_window import compute_steps
from training.inplane import augment, protocol
from training.inplane.data import SliceBank, Volume
from training.inplane.export import card_stage, to_card_state
from eval.dice import dice_per_label
from training.inplane.loop import build_net2d, dice_ce_loss
from training.inplane.recipe import Appearance, Spatial, StageRecipe, as_profile, load_profile
from training.inplane.train import train_one

from helpers import REAL


def test_builtin_profile_has_the_issue_rows_and_in_plane_stages():
    prof = load_profile("cpu")
    assert set(prof.rows) >= {"1", "A", "4"}
    assert prof.rows["A"].appearance.strong and not prof.rows["1"].appearance.strong
    assert prof.rows["4"].source == "chaos_target"
    assert prof.fine.spacing_mm[0] is None and prof.coarse.spacing_mm[0] is None
    # each row trains within the CPU profile's 90 minutes (shared coarse + one fine stage)
    assert prof.coarse.time_budget_s + prof.fine.time_budget_s <= 90 * 60


def test_a_run_graph_is_made_from_the_profile_it_loaded(tmp_path):
    """The graph of a run records the settings of the Profile object it loaded (its steps' commands name the
    file), so a later edit shows as changed settings on the next run; a broken file is refused."""
    from training.inplane.layout import score_file
    from training.inplane.steps import row_steps

    child = tmp_path / "p.json"
    child.write_text(json.dumps({"extends": "cpu"}))
    prof = load_profile(str(child))
    assert as_profile(prof) is prof and as_profile(str(child)) == prof
    steps = row_steps(tmp_path / "w", prof, str(child), ["A3"])
    assert steps[0].name == "pack" and all(str(child) in s.argv for s in steps if s.argv)
    child.write_text("{ not json")
    assert [s.name for s in steps][-1] == "rA3.score" and score_file(tmp_path / "w", prof, "P").name.endswith(".csv")
    with pytest.raises(ValueError):
        as_profile(str(child))


def test_profile_extends_merges_and_rejects_bad_files(tmp_path):
    child = tmp_path / "child.json"
    child.write_text(json.dumps({"extends": "cpu", "fine": {"time_budget_s": 7}, "rows": {"A": {"appearance":
                                                                                                  {"p_bias": 0.0}}}}))
    prof = load_profile(str(child))
    base = load_profile("cpu")
    assert prof.fine.time_budget_s == 7 and prof.fine.patch == base.fine.patch
    assert prof.rows["A"].appearance.p_bias == 0.0 and prof.rows["A"].appearance.strong
    (tmp_path / "bad.json").write_text(json.dumps({"extends": "cpu", "fine": {"patchsize": [64, 64]}}))
    with pytest.raises(ValueError, match="patchsize"):
        load_profile(str(tmp_path / "bad.json"))
    (tmp_path / "a.json").write_text(json.dumps({"extends": "b"}))
    (tmp_path / "b.json").write_text(json.dumps({"extends": "a"}))
    with pytest.raises(ValueError, match="loops"):
        load_profile(str(tmp_path / "a.json"))
    with pytest.raises(ValueError, match="multiples"):
        StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(100, 100), features=(4, 8, 16, 32, 64))


def test_card_spacing_none_keeps_the_axis_and_one_slice_patches_step_one_slice():
    assert resample.shape_at_spacing((31, 256, 256), (7.7, 1.25, 1.25), (None, 2.5, 2.5)) == (31, 128, 128)
    st = card_stage(StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(16, 16), features=(4, 8)), (0, 1))
    assert st.spacing_mm[0] is None
    with pytest.raises(ModelCardError, match="spacing_mm"):
        replace(st, spacing_mm=(None, None, None))
    with pytest.raises(ModelCardError, match="spacing_mm"):
        replace(st, spacing_mm=(None, 0.0, 2.0))
    assert StageConfig.from_dict(json.loads(json.dumps(asdict(st)))) == st   # null survives the card's JSON
    # a patch of one slice visits each slice once (a step of 0.5 slice would repeat every window)
    assert compute_steps((5, 16, 16), (1, 16, 16), 0.5)[0] == [0, 1, 2, 3, 4]
    assert compute_steps((64, 64, 64), (32, 32, 32), 0.5)[0] == [0, 16, 32]  # unchanged for real patches


def test_card_network_on_one_slice_equals_the_2d_network():
    torch.manual_seed(0)
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(32, 32), features=(4, 8, 16))
    net2d = build_net2d(recipe.features, 5).eval()
    for p in net2d.parameters():  # non-trivial norm affine parameters too
        p.data.normal_(0, 0.3)
    cfg = card_stage(recipe, (0, 1, 2, 3, 13))
    net3d = build_network(cfg.architecture, cfg.num_classes).eval()
    net3d.load_state_dict(to_card_state(net2d.state_dict()), strict=True)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ref = net2d(x)
        got = torch.cat([net3d(x[i:i + 1, :, None])[:, :, 0] for i in range(3)])
    assert got.shape == ref.shape == (3, 5, 32, 32)
    assert torch.allclose(got, ref, atol=1e-5)
    assert cfg.patch_size == (1, 32, 32) and cfg.tta.axes == ()


def _volume(shape=(3, 40, 50)) -> Volume:
    img = np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    labels = np.zeros(shape, np.uint8)
    labels[:, 10:20, 15:30] = 1
    regions = labels.copy()
    return Volume("v", img.astype(np.float16), labels, regions, (5.0, 2.0, 2.0), ((10, 20), (15, 30)), (0, 1))


def test_identity_patch_grid_reproduces_the_slice():
    vol = _volume()
    h, w = vol.image.shape[1:]
    grid = augment.patch_grid(((h - 1) / 2, (w - 1) / 2), (h, w), 0.0, (1.0, 1.0), (h, w))
    img = torch.from_numpy(vol.image[1].astype(np.float32))[None, None]
    out = F.grid_sample(img, grid, mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(out, img[0, 0], atol=1e-6)
    # a quarter turn about the centre: output (i, j) is offset d = (i - 2.5, j - 2.5) and samples the slice at
    # centre + R(90 deg) d = (2.5 - (j - 2.5), 2.5 + (i - 2.5)) = (5 - j, i)
    sq = torch.arange(36.0).view(1, 1, 6, 6)
    g = augment.patch_grid((2.5, 2.5), (6, 6), np.pi / 2, (1.0, 1.0), (6, 6))
    rot = F.grid_sample(sq, g, mode="nearest", align_corners=False)[0, 0]
    i, j = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    assert torch.equal(rot, sq[0, 0][torch.from_numpy(5 - j), torch.from_numpy(i)])


def test_curve_with_linear_knots_is_the_identity_and_finish_pads_with_zero():
    x = torch.rand(1, 20, 20)
    assert torch.allclose(augment._curve(x, torch.linspace(0, 1, 6)), x, atol=1e-6)
    inside = torch.zeros(20, 20, dtype=torch.bool)
    inside[5:15, 5:15] = True
    y = augment.finish(x * 3 + 7, inside)
    assert torch.all(y[:, ~inside] == 0)
    assert abs(float(y[:, inside].mean())) < 1e-5 and abs(float(y[:, inside].std()) - 1) < 1e-4


def test_batches_keep_labels_with_their_pixels_and_mask_outside_the_roi():
    vol = _volume()
    bank = SliceBank([vol])
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    spatial = Spatial(rotation_deg=0.0, zoom=(1.0, 1.0), stretch=0.0, p_foreground=1.0, p_roi_mask=1.0,
                      roi_margin_mm=(4.0, 4.0))
    x, y = augment.make_batch(bank, spatial, Appearance(strong=True), (32, 32), 4, rng, gen, roi_mask=True)
    assert x.shape == (4, 1, 32, 32) and y.shape == (4, 32, 32)
    assert all((y[i] == 1).sum() == 150 for i in range(4))  # the whole 10x15 organ, never resized
    assert torch.isfinite(x).all()
    assert all(int((x[i, 0] == 0).sum()) >= 32 * 32 - (10 + 4) * (15 + 4) for i in range(4))  # pad outside the ROI


def test_loss_and_dice_have_their_analytic_values():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:5, 2:5] = 1
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    loss = dice_ce_loss(logits, target)
    # class 2 is absent and never predicted: its Dice is 1 through the smoothing term, so the loss is ~0
    assert float(loss) < 1e-3
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 1
    b = np.zeros((4, 4), np.uint8)
    b[1:3] = 1
    assert dice_per_label(a, b, [1])[1] == pytest.approx(0.5)


@pytest.mark.slow
def test_tiny_row_on_real_ct_trains_exports_scores_publishes_and_resumes_elsewhere(tmp_path):
    """One row of the benchmark on real data with tiny networks (3 iterations each, on the 30 BTCV scans): the
    runner trains, exports, runs the engine on the CHAOS test scans and scores them; the exported masks have the
    input's geometry; publish + seed give a new work folder that needs no training (no accuracy is expected)."""
    case = protocol.btcv_case("btcv_0001", REAL)
    if not case.image.is_file():
        pytest.skip(f"{case.image} not present")
    from inference.pipeline import segment_image
    from training.inplane import bench
    from training.inplane.report import row_summary

    prof_file = tmp_path / "tiny.json"
    prof_file.write_text(json.dumps({
        "extends": "cpu", "name": "tiny",
        "coarse": {"features": [4, 8, 16], "patch": [64, 64], "batch": 2, "iterations": 3, "time_budget_s": None},
        "fine": {"features": [4, 8, 16], "patch": [64, 64], "batch": 2, "iterations": 3, "time_budget_s": None}}))
    work = tmp_path / "work"
    csv_path = bench.run_row(work, str(prof_file), "A", REAL, curve_on_test=False)
    summary = row_summary(csv_path)
    assert set(summary) == {1, 2, 3, 13, "mean", "cases"} and 0 <= summary["mean"][0] <= 1
    assert set(summary["cases"]) == set(protocol.TEST_CASES)
    for stage in ("coarse", "rows/A/fine"):
        assert json.loads((work / stage / "summary.json").read_text())["iterations"] == 3
    model = work / "models" / "rA"
    card = json.loads((model / "model.json").read_text())
    assert card["fine"]["spacing_mm"][0] is None and card["fine"]["patch_size"][0] == 1
    assert card["fine"]["label_ids"] == list(protocol.BTCV_LABELS)
    image = REAL / "mr_chaos_t2" / "images" / "chaos_t2_33_0000.nii.gz"
    out = segment_image(image, model.parent, model="rA", device="cpu", backend="onnx")
    ref = sitk.ReadImage(str(image))
    assert out.GetSize() == ref.GetSize() and out.GetSpacing() == ref.GetSpacing()
    assert out.GetDirection() == ref.GetDirection() and out.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayViewFromImage(out))) <= set(protocol.BTCV_LABELS)

    table = bench.publish(work, str(prof_file), tmp_path / "results").read_text()
    assert "(A) source CT" in table and (tmp_path / "results" / "stages" / "coarse" / "final.pt").is_file()
    bench.publish(work, str(prof_file), tmp_path / "results_no_rows", weights_of=())
    assert not (tmp_path / "results_no_rows/stages/rows/A/fine/final.pt").exists()
    assert (tmp_path / "results_no_rows/stages/rows/A/fine/curve.csv").is_file()
    work2 = tmp_path / "work2"
    assert len(bench.seed_work(tmp_path / "results", work2)) == 2
    assert train_one(work2, str(prof_file), "A", "fine", REAL) == work2 / "rows" / "A" / "fine"
    assert json.loads((work2 / "rows/A/fine/summary.json").read_text()) == json.loads(
        (work / "rows/A/fine/summary.json").read_text())
    shipped = bench.ship(work, str(prof_file), "A", tmp_path / "weights_ship" / "tiny_ship", "tiny_ship")
    card = json.loads((shipped / "model.json").read_text())
    assert card["provenance"]["benchmark"]["mean_dsc"] == round(summary["mean"][0], 4)
    assert sorted(p.name for p in shipped.iterdir()) == ["coarse.onnx", "fine.onnx", "model.json"]
    # a stage without ONNX weights is refused (the container ships ONNX only), not shipped without its network
    card_file = work / "models" / "rA" / "model.json"
    original = card_file.read_text()
    torch_only = json.loads(original)
    torch_only["fine"]["files"] = {"torch": torch_only["fine"]["files"]["torch"]}
    card_file.write_text(json.dumps(torch_only))
    with pytest.raises(FileNotFoundError, match="no ONNX weights"):
        bench.ship(work, str(prof_file), "A", tmp_path / "weights_ship" / "no_onnx", "no_onnx")
    card_file.write_text(original)

    # the steps' "done" markers record what each step was made from: a changed fine recipe retrains the fine
    # stage and redoes export and score, and leaves the coarse stage as it was
    coarse_final = (work / "coarse" / "final.pt").stat().st_mtime_ns
    assert set(json.loads((work / "state" / "rA.fine.json").read_text())["upstream"]) == {"pack"}
    profile = json.loads(prof_file.read_text())
    profile["fine"]["iterations"] = 4
    prof_file.write_text(json.dumps(profile))
    bench.run_row(work, str(prof_file), "A", REAL, curve_on_test=False)
    assert json.loads((work / "rows/A/fine/summary.json").read_text())["iterations"] == 4
    assert (work / "coarse" / "final.pt").stat().st_mtime_ns == coarse_final
    assert json.loads((work / "rows/A/fine/settings.json").read_text())["recipe"]["iterations"] == 4


@pytest.mark.slow
def test_pack_round_trip_matches_the_volumes_it_was_made_from(tmp_path, monkeypatch):
    """A pack of two BTCV scans and one CHAOS target scan loads back on the fine grid with the same labels, organ
    boxes and regions, images within the uint8 step; on the coarse grid (made from the packed one) with the labels
    of the engine's own preparation on all but a few boundary voxels."""
    if not protocol.btcv_case("btcv_0001", REAL).image.is_file():
        pytest.skip("needs ../shared/data/real")
    from training.inplane.data import load_volume
    from training.inplane.pack import load_packed, pack

    monkeypatch.setattr(protocol, "BTCV_CASES", ("btcv_0001", "btcv_0002"))
    monkeypatch.setattr(protocol, "TARGET_CASES", ("chaos_t2_01",))
    path = pack(tmp_path / "p.npz", "cpu", REAL)
    prof = load_profile("cpu")
    cases = [protocol.btcv_case("btcv_0002", REAL)]
    got = load_packed(path, prof.fine.spacing_mm, cases)[0]
    ref = load_volume(cases[0], prof.fine.spacing_mm, protocol.BTCV_LABELS)
    assert np.array_equal(got.labels, ref.labels) and np.array_equal(got.regions, ref.regions)
    assert got.organ_box == ref.organ_box and got.label_ids == ref.label_ids
    assert got.spacing_mm == pytest.approx(ref.spacing_mm)
    assert np.abs(got.image.astype(np.float32) - ref.image.astype(np.float32)).max() <= 0.5 / 255 + 1e-3
    coarse = load_packed(path, prof.coarse.spacing_mm, cases)[0]
    cref = load_volume(cases[0], prof.coarse.spacing_mm, protocol.BTCV_LABELS)
    assert coarse.labels.shape == cref.labels.shape and coarse.spacing_mm == pytest.approx(cref.spacing_mm)
    assert (coarse.labels == cref.labels).mean() > 0.99
    assert np.abs(coarse.image.astype(np.float32) - cref.image.astype(np.float32)).mean() < 0.02
    chaos = load_packed(path, prof.fine.spacing_mm, protocol.test_cases(REAL))
    assert [v.label_ids for v in chaos] == [protocol.CHAOS_LABELS] * 4
    with pytest.raises(ValueError, match="not in the pack"):
        load_packed(path, prof.fine.spacing_mm, [protocol.btcv_case("btcv_0003", REAL)])


def test_training_from_a_pack_needs_neither_simpleitk_nor_scipy():
    """A lent GPU machine has torch and numpy but not SimpleITK (its library alone is most of the 64 MiB upload):
    the training path from a pack must not import it (nor scipy)."""
    import subprocess
    import sys

    code = ("import sys; import training.inplane.bench, training.inplane.loop, training.inplane.pack; "
            "bad = [m for m in ('SimpleITK', 'scipy', 'cc3d', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_stopped_training_resumes_from_its_checkpoint_without_repeating_curve_rows(tmp_path):
    from training.inplane.loop import train_stage

    bank = SliceBank([_volume((4, 40, 50))])
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(32, 32), features=(4, 8), batch=2, iterations=4,
                         eval_every_s=0.0, checkpoint_every_s=0.0)
    out = tmp_path / "stage"
    train_stage(out, bank, recipe, Spatial(), Appearance(), (0, 1), progress=False)
    first = (out / "curve.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in first[1:]] == ["1", "2", "3", "4"]
    # as if stopped after iteration 2: its checkpoint, and curve rows written after it
    import torch as _torch

    state = _torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 4
    (out / "final.pt").unlink()
    (out / "summary.json").unlink()
    state["iteration"] = 2
    _torch.save(state, out / "checkpoint.pt")
    train_stage(out, bank, replace(recipe, iterations=6), Spatial(), Appearance(), (0, 1), progress=False)
    rows = [r.split(",")[0] for r in (out / "curve.csv").read_text().splitlines()[1:]]
    assert rows == ["1", "2", "3", "4", "5", "6"]
    assert json.loads((out / "summary.json").read_text())["iterations"] == 6 and (out / "final.pt").is_file()


def test_a_training_killed_before_its_curve_header_starts_afresh(tmp_path):
    from training.inplane.loop import train_stage

    out = tmp_path / "stage"
    out.mkdir()
    (out / "curve.csv").write_text("")   # killed after opening its curve, before the first row
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(32, 32), features=(4, 8), batch=2, iterations=2,
                         eval_every_s=0.0, checkpoint_every_s=0.0)
    train_stage(out, SliceBank([_volume((4, 40, 50))]), recipe, Spatial(), Appearance(), (0, 1), progress=False)
    rows = (out / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("iteration") and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]


@pytest.mark.slow
def test_a_3d_nnunet_row_runs_the_c2f_chain_on_real_ct_in_the_same_graph(tmp_path, monkeypatch):
    """A row whose trainer is the 3D nnU-Net v2 C2F (training.c2f) on real BTCV CT (two scans, tiny networks, two
    iterations per stage): the same runner converts, plans, trains both stages, exports and scores it on the
    CHAOS test scans; the model segments a real scan in its geometry; publish keeps nnU-Net's learning curves."""
    cases = [protocol.btcv_case(c, REAL) for c in ("btcv_0001", "btcv_0002")]
    if not all(c.image.is_file() for c in cases):
        pytest.skip("BTCV scans not present")
    from inference.pipeline import segment_image
    from training.inplane import bench, steps
    from training.inplane.report import row_summary

    data = tmp_path / "data"
    for c in cases:
        for src, sub in ((c.image, "imagesTr"), (c.label, "labelsTr")):
            (data / "ct_btcv" / sub).mkdir(parents=True, exist_ok=True)
            (data / "ct_btcv" / sub / src.name).symlink_to(src)
    (data / "mr_chaos_t2").symlink_to(REAL / "mr_chaos_t2")
    (data / "flare22_labels").symlink_to(REAL / "flare22_labels")   # the profile's pack holds them (row RAd)
    net = {"features_per_stage": [4, 8], "strides": [[1, 1, 1], [2, 2, 2]], "n_conv_per_stage": 1,
           "n_conv_per_stage_decoder": 1}
    run = {"epochs": 1, "iterations": 2, "val_iterations": 1}
    prof_file = tmp_path / "tiny3d.json"
    prof_file.write_text(json.dumps({"extends": "cpu", "name": "tiny3d", "nnunet3d": {
        "spec": {"coarse": {"spacing_mm": [10.0, 10.0, 10.0], "patch_size": [16, 32, 32], "network": net},
                 "fine": {"spacing_mm": [8.0, 4.0, 4.0], "patch_size": [16, 32, 32], "network": net},
                 "crops_per_case": 1},
        "coarse": run, "fine": run, "workers": 1}}))
    prof = load_profile(str(prof_file))
    monkeypatch.setattr(protocol, "BTCV_CASES", ("btcv_0001", "btcv_0002"))
    graph = [s.name for s in steps.row_steps(tmp_path / "work", prof, str(prof_file), ["C1"], None, data)]
    assert graph == ["pack", "rC1.sources", "rC1.convert", "rC1.plan", "rC1.coarse", "rC1.fine", "rC1.export",
                     "rC1.score"]
    csv_path = bench.run_row(tmp_path / "work", str(prof_file), "C1", data, curve_on_test=False)
    summary = row_summary(csv_path)
    assert set(summary["cases"]) == set(protocol.TEST_CASES) and 0 <= summary["mean"][0] <= 1
    model = tmp_path / "work" / "models" / "rC1"
    card = json.loads((model / "model.json").read_text())
    assert card["fine"]["spacing_mm"] == [8.0, 4.0, 4.0] and card["modalities"] == ["MRI"]
    image = REAL / "mr_chaos_t2" / "images" / "chaos_t2_33_0000.nii.gz"
    out = segment_image(image, model.parent, model="rC1", device="cpu", backend="torch")
    ref = sitk.ReadImage(str(image))
    assert out.GetSize() == ref.GetSize() and out.GetDirection() == ref.GetDirection()
    bench.publish(tmp_path / "work", prof, tmp_path / "results")
    curves = sorted(p.name for p in (tmp_path / "results" / "stages" / "rows" / "C1" / "nnunet").rglob("*.png"))
    assert curves == ["progress.png", "progress.png"]   # nnU-Net's curve of each stage


def test_weight_averaging_holds_the_rate_and_averages_the_later_iterations(tmp_path, monkeypatch):
    from training.inplane import loop

    added = []
    original = loop.AveragedModel.update_parameters
    monkeypatch.setattr(loop.AveragedModel, "update_parameters", lambda self, model: (
        added.append({k: v.detach().clone() for k, v in model.state_dict().items()}), original(self, model)))
    bank = SliceBank([_volume((4, 40, 50))])
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(32, 32), features=(4, 8), batch=2, iterations=4,
                         eval_every_s=0.0, checkpoint_every_s=0.0, swa_from=0.5)
    out = tmp_path / "stage"
    loop.train_stage(out, bank, recipe, Spatial(), Appearance(), (0, 1), progress=False)
    lrs = [float(r.split(",")[2]) for r in (out / "curve.csv").read_text().splitlines()[1:]]
    assert lrs[:2] == [1e-3, pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 0.25)), rel=1e-2)]
    assert lrs[2:] == [5e-4, 5e-4]       # progress 0.5 and 0.75: held at the cosine's value at 0.5
    assert len(added) == 2               # the weights after iterations 3 and 4
    final = torch.load(out / "final.pt", weights_only=True)
    for k, v in final.items():
        assert torch.allclose(v, (added[0][k] + added[1][k]) / 2, atol=1e-6)
    assert not torch.equal(final["decoder.seg_layers.0.weight"], added[1]["decoder.seg_layers.0.weight"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["swa"]["iterations_averaged"] == 2 and summary["swa"]["from_progress"] == 0.5
    # resumed with a longer run: the checkpoint's mean goes on (iterations 5 and 6 join it)
    (out / "final.pt").unlink()
    (out / "summary.json").unlink()
    loop.train_stage(out, bank, replace(recipe, iterations=6), Spatial(), Appearance(), (0, 1), progress=False)
    assert json.loads((out / "summary.json").read_text())["swa"]["iterations_averaged"] == 4


def test_weight_averaging_is_validated_and_absent_from_older_fingerprints():
    with pytest.raises(ValueError, match="swa_from"):
        StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(32, 32), features=(4, 8), swa_from=1.0)
    prof = load_profile("cpu")
    assert "swa_from" not in prof.stage_settings("RA10z", "fine")["recipe"]


def test_the_curve_of_a_weight_averaged_stage_marks_where_averaging_began_and_the_mean(tmp_path):
    from training.inplane.report import _mark_weight_mean
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = {"iteration": np.array([100.0, 200.0, 300.0, 400.0]), "seconds": np.array([60.0, 120.0, 180.0, 240.0])}
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"iterations": 400, "swa": {"from_progress": 0.5, "iterations_averaged": 150,
                                                              "dice": {"1": 0.8, "2": 0.6}}}))
    fig, ax = plt.subplots()
    _mark_weight_mean(ax, c, summary, ["dice_1", "dice_2"])
    (line,) = [ln for ln in ax.lines if ln.get_label() == "weight averaging from"]
    assert line.get_xdata()[0] == pytest.approx(2.5)      # iteration 250 -> minute 2.5
    (star,) = [ln for ln in ax.lines if ln.get_label() == "final weights (the mean)"]
    assert star.get_xdata()[0] == 4.0 and star.get_ydata()[0] == pytest.approx(0.7)
    fig2, ax2 = plt.subplots()
    summary.write_text(json.dumps({"iterations": 400}))   # no averaging: nothing drawn
    _mark_weight_mean(ax2, c, summary, ["dice_1"])
    assert not ax2.lines
    plt.close("all")
