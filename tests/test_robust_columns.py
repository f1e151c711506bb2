"""The sequence-robustness columns: the contrast-stress transforms (analytic values), the stress set's files,
a shipped ONNX fine stage recovered as 2D start weights, and the columns' summary from score files."""
from __future__ import annotations

import json

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from eval.stress import CURVE_KNOTS, TRANSFORMS, make_stress_set, transform
from training.export import export_onnx
from training.inplane.export import card_stage, from_card_state, stage_from_onnx, to_card_state
from training.inplane.loop import build_net2d
from training.inplane.recipe import StageRecipe, load_profile
from training.inplane.robust import T1_CASE, T1_ORGANS, columns_table, summarise
from inference.network import build_network


def _phantom() -> np.ndarray:
    """A body disc (value 0.5) with a bright organ (0.9) on every slice, air 0 around it."""
    z, y, x = np.mgrid[0:3, 0:40, 0:40]
    t = np.where((y - 20) ** 2 + (x - 20) ** 2 < 15 ** 2, 0.5, 0.0)
    t[(y - 20) ** 2 + (x - 15) ** 2 < 4 ** 2] = 0.9
    return t.astype(np.float32)


def test_invert_flips_the_body_and_leaves_the_air_dark():
    t = _phantom()
    out = transform(t, "invert")
    assert np.allclose(out[t == 0], 0) and np.allclose(out[t == 0.5], 0.5) and np.allclose(out[t == 0.9], 0.1)


def test_curve_passes_through_its_knots_and_keeps_zero():
    t = np.linspace(0, 1, len(CURVE_KNOTS), dtype=np.float32)[None, None]
    assert np.allclose(transform(t, "curve")[0, 0], CURVE_KNOTS)
    assert transform(np.zeros((1, 2, 2), np.float32), "curve").max() == 0


def test_bias_is_a_smooth_shading_along_both_in_plane_axes():
    out = transform(np.full((1, 5, 5), 0.5, np.float32), "bias")
    # t * exp(0.6 ramp_y + 0.3 ramp_x), divided by its maximum, ^ 0.6: the corner (y, x) = (4, 4) is 1
    expect = (np.exp(0.6 * np.linspace(-1, 1, 5)[:, None] + 0.3 * np.linspace(-1, 1, 5)[None]) / np.exp(0.9)) ** 0.6
    assert np.allclose(out[0], expect, atol=1e-6)


def test_lowres_is_deterministic_per_seed_and_noisy():
    t = _phantom()
    a, b, c = transform(t, "lowres", seed=1), transform(t, "lowres", seed=1), transform(t, "lowres", seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.02 < float(a[t == 0].mean()) < 0.15      # Rician noise lifts the air above 0
    with pytest.raises(ValueError, match="unknown stress transform"):
        transform(t, "sharpen")


def test_stress_set_keeps_geometry_links_labels_and_is_not_rewritten(tmp_path):
    img = sitk.GetImageFromArray((_phantom() * 800).astype(np.int16))
    img.SetSpacing((1.5, 1.5, 6.0))
    img.SetOrigin((10.0, -5.0, 3.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    (tmp_path / "in").mkdir()
    (tmp_path / "lab").mkdir()
    sitk.WriteImage(img, str(tmp_path / "in" / "case_01_0000.nii.gz"))
    lab = sitk.Cast(img > 500, sitk.sitkUInt8)
    sitk.WriteImage(lab, str(tmp_path / "lab" / "case_01.nii.gz"))
    made = make_stress_set([tmp_path / "in" / "case_01_0000.nii.gz"], tmp_path / "lab", tmp_path / "out")
    assert [p.name for p in made] == [f"case_01_{t}_0000.nii.gz" for t in TRANSFORMS]
    for t, path in zip(TRANSFORMS, made, strict=True):
        out = sitk.ReadImage(str(path))
        assert out.GetSize() == img.GetSize() and out.GetDirection() == img.GetDirection()
        assert np.allclose(out.GetSpacing(), img.GetSpacing()) and np.allclose(out.GetOrigin(), img.GetOrigin())
        assert (tmp_path / "out" / "labels" / f"case_01_{t}.nii.gz").resolve() == (tmp_path / "lab" / "case_01.nii.gz").resolve()
    before = made[0].stat().st_mtime_ns
    make_stress_set([tmp_path / "in" / "case_01_0000.nii.gz"], tmp_path / "lab", tmp_path / "out")
    assert made[0].stat().st_mtime_ns == before
    with pytest.raises(FileNotFoundError, match="label map"):
        make_stress_set([tmp_path / "in" / "case_01_0000.nii.gz"], tmp_path / "in", tmp_path / "out2")


def test_a_shipped_onnx_fine_stage_comes_back_as_the_2d_weights(tmp_path):
    torch.manual_seed(0)
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(32, 32), features=(4, 8, 16))
    net2d = build_net2d(recipe.features, 5).eval()
    for p in net2d.parameters():
        p.data.normal_(0, 0.3)
    cfg = card_stage(recipe, (0, 1, 2, 3, 13))
    net3d = build_network(cfg.architecture, cfg.num_classes)
    net3d.load_state_dict(to_card_state(net2d.state_dict()), strict=True)
    export_onnx(net3d, cfg.patch_size, tmp_path / "fine.onnx")
    got = stage_from_onnx(tmp_path / "fine.onnx", recipe.features, 5)
    ref = net2d.state_dict()
    used = [k for k in ref if not k.startswith("decoder.seg_layers.0.")]   # the unused deep-supervision head
    assert set(got) == set(ref) and all(torch.allclose(got[k], ref[k]) for k in used)
    assert from_card_state(to_card_state(ref)).keys() == ref.keys()
    with pytest.raises(ValueError, match="another network"):
        stage_from_onnx(tmp_path / "fine.onnx", (4, 8, 16, 32), 5)


def test_stage_fingerprints_record_p_strong_only_when_set():
    prof = load_profile("cpu")
    assert "p_strong" not in prof.stage_settings("A", "fine")["row"]["appearance"]   # published stages still match
    assert prof.stage_settings("Rh", "fine")["row"]["appearance"]["p_strong"] == 0.5


def _write_scores(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "organ", "dsc", "nsd"])
        w.writerows(rows)


def test_columns_summary_has_the_means_each_set_defines(tmp_path):
    _write_scores(tmp_path / "t2" / "scores.csv", [(c, o, 0.9 if c == "a" else 0.7, 0.8) for c in "ab"
                                                   for o in (1, 2, 3, 13)])
    _write_scores(tmp_path / "t1" / "scores.csv", [(T1_CASE, o, 0.8 if o in (1, 2, 3, 13) else 0.2, 0.5)
                                                   for o in T1_ORGANS])
    _write_scores(tmp_path / "stress" / "scores.csv",
                  [(f"chaos_t2_33_{t}", o, 0.6 if t == "invert" else 1.0, 0.5) for t in TRANSFORMS for o in (1, 2, 3, 13)])
    _write_scores(tmp_path / "ct" / "scores.csv", [("ts_ct_sm", o, 0.5 if o == 12 else 0.9, 0.5) for o in T1_ORGANS])
    s = summarise(tmp_path)
    assert s["ct"]["organs"]["duodenum"] == pytest.approx(0.5)
    assert s["t2"]["dsc"] == pytest.approx(0.8) and s["t2"]["nsd"] == pytest.approx(0.8)
    assert s["t1"]["core_dice"] == pytest.approx(0.8) and s["t1"]["all_dice"] == pytest.approx((4 * 0.8 + 8 * 0.2) / 12)
    assert s["stress"]["transforms"]["invert"] == pytest.approx(0.6) and s["stress"]["dsc"] == pytest.approx(0.9)
    import json

    (tmp_path / "robust.json").write_text(json.dumps(s))
    md = columns_table({"x": ("row x", tmp_path / "robust.json")})
    assert ("| row x | 80.0 | 80.0 | 80.0 | 80.0 | 80.0 | 80.0 | **80.0** | 40.0 | 20.0 | **90.0** | 60.0 | 100.0 | 100.0 "
            f"| 100.0 | - | - | {100 * (11 * 0.9 + 0.5) / 12:.1f} | 50.0 |") in md


def test_seed_model_makes_a_shipped_model_a_teacher_and_a_start_row(tmp_path):
    from training.export import export_model
    from training.inplane.__main__ import main

    torch.manual_seed(1)
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(32, 32), features=(4, 8, 16))
    nets = {}
    for stage in ("coarse", "fine"):
        net2d = build_net2d(recipe.features, 5)
        for p in net2d.parameters():
            p.data.normal_(0, 0.3)
        cfg = card_stage(recipe, (0, 1, 2, 3, 13))
        net3d = build_network(cfg.architecture, cfg.num_classes)
        net3d.load_state_dict(to_card_state(net2d.state_dict()), strict=True)
        nets[stage] = (net2d, (net3d, cfg))
    shipped = export_model(tmp_path / "shipped", name="shipped", description="test", modalities=("MRI",),
                           stages={k: v[1] for k, v in nets.items()})
    work = tmp_path / "work"
    assert main(["seed", "--work", str(work), "--model", f"T={shipped}"]) == 0
    assert (work / "models" / "rT" / "model.json").is_file()
    got = torch.load(work / "rows" / "T" / "fine" / "final.pt", weights_only=True)
    ref = nets["fine"][0].state_dict()
    assert all(torch.allclose(got[k], ref[k], atol=1e-6) for k in ref if not k.startswith("decoder.seg_layers.0."))
    assert not (work / "rows" / "T" / "fine" / "summary.json").exists()   # never published as a trained stage
    assert main(["seed", "--work", str(work), "--model", "T"]) == 2                     # ROW=DIR expected
    assert main(["seed", "--work", str(work)]) == 2                                     # nothing to seed


def test_record_in_card_writes_the_columns_into_the_card_and_leaves_the_weights(tmp_path):
    from inference.model_folder import load_model_folder
    from training.inplane.robust import record_in_card

    from helpers import make_random_model

    model = make_random_model(tmp_path / "m", modalities=("MRI",), onnx=False)
    before = load_model_folder(model).card
    columns = {"t1": {"core_dice": 0.8, "all_dice": 0.6, "organs": {"12": 0.5}}}
    (tmp_path / "robust.json").write_text(json.dumps(columns))
    record_in_card(model, tmp_path / "robust.json")
    after = load_model_folder(model, verify=True).card
    assert after.provenance["benchmark"]["robustness"] == columns and after.sha256 == before.sha256
    assert after.provenance["training"] == before.provenance["training"]


def test_record_in_card_takes_the_test_scores_from_the_t2_set(tmp_path):
    """A model made by `back-to-input` carries no benchmark scores of its own; recording its columns gives the
    card the T2 set's per-organ DSC / NSD and their means (the numbers `ship` records from the score file)."""
    from inference.model_folder import load_model_folder
    from training.export import with_back_to_input
    from training.inplane import protocol
    from training.inplane.robust import record_in_card

    from helpers import make_random_model

    src = make_random_model(tmp_path / "m", modalities=("MRI",), onnx=False)
    model = with_back_to_input(src, tmp_path / "p", name="p", back_to_input="probabilities")
    assert "benchmark" not in load_model_folder(model).card.provenance
    organs = {"liver": [0.9, 0.8], "right kidney": [0.92, 0.93], "spleen": [0.9, 0.88], "left kidney": [0.88, 0.85]}
    columns = {"t2": {"dsc": 0.9, "nsd": 0.865, "organs": organs}}
    (tmp_path / "robust.json").write_text(json.dumps(columns))
    record_in_card(model, tmp_path / "robust.json")
    bench = load_model_folder(model, verify=True).card.provenance["benchmark"]
    assert bench["mean_dsc"] == 0.9 and bench["mean_nsd"] == 0.865 and bench["robustness"] == columns
    assert bench["test_dsc"] == {o: v[0] for o, v in organs.items()} and bench["test_nsd"]["spleen"] == 0.88
    assert bench["test_cases"] == list(protocol.TEST_CASES)
