"""Pseudo-label prediction with tiny random models: sharding covers every case once, resume skips finished cases,
scans are resampled to the CT median spacing, PET cases come out FLARE-numbered, bad input is named."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import make_random_model, tiny_stage, write_image
from phantoms import blob_image
from phantoms import write_ct_label_set
from training.selftrain.__main__ import main
from training.selftrain.geometry import physical_spacing_xyz
from training.selftrain.predict import (PredictConfig, PredictError, find_images, is_finished, parse_shard,
                                        resolve_models, run_predict, shard_cases)
from training.selftrain.stats import compute_stats, save_stats

MODELS = ("best", "second", "extra")
CT_SPACING = (1.5, 1.5, 2.5)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("selftrain_predict")
    weights = root / "weights"
    fine = tiny_stage((3.0, 3.0, 3.0), (16, 32, 32))  # no TTA: fast
    for seed, name in enumerate(MODELS):
        make_random_model(weights / name, seed=seed, onnx=False, bias_foreground=2.0, fine=fine)
    images = root / "images"
    images.mkdir()
    write_image(blob_image((12, 28, 28), seed=1), images / "mr_a_0000.nii.gz", spacing=(2.0, 2.0, 4.0))  # resampled
    for i, case in enumerate(("mr_b", "mr_c", "fdg_d")):
        write_image(blob_image((16, 32, 32), seed=2 + i), images / f"{case}_0000.nii.gz", spacing=CT_SPACING)
    stats = compute_stats(write_ct_label_set(root / "ct_labels", n=3), progress=False)
    save_stats(stats, root / "stats.json")
    return root, weights, images


def _config(root, weights, images, out, shard=(1, 1), models=MODELS, spacing=CT_SPACING):
    return PredictConfig(images=images, weights_dir=weights, models=tuple(models), out=out,
                         target_spacing_xyz_mm=spacing, shard=shard, device="cpu", backend="torch", threads=1,
                         progress=False)


@pytest.fixture(scope="module")
def sharded(setup):
    root, weights, images = setup
    out = root / "pred"
    summaries = [run_predict(_config(root, weights, images, out, shard=(k, 2))) for k in (1, 2)]
    return out, summaries


def test_shards_cover_every_case_exactly_once():
    for n_cases in range(0, 9):
        cases = [f"c{i:02d}" for i in range(n_cases)][::-1]
        for n in range(1, 5):
            parts = [shard_cases(cases, k, n) for k in range(1, n + 1)]
            flat = [c for p in parts for c in p]
            assert sorted(flat) == sorted(cases) and len(flat) == len(set(flat))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parse_shard("3/10") == (3, 10)
    for bad in ("0/2", "3/2", "1/0", "a/b", "2"):
        with pytest.raises(PredictError, match="--shard"):
            parse_shard(bad)


def test_sharded_run_predicts_each_case_once_with_every_model(setup, sharded):
    root, weights, images = setup
    out, (s1, s2) = sharded
    assert sorted(s1.predicted + s2.predicted) == ["fdg_d", "mr_a", "mr_b", "mr_c"]
    assert not set(s1.predicted) & set(s2.predicted)
    assert not s1.failed and not s2.failed and not s1.skipped and not s2.skipped
    for case in ("fdg_d", "mr_a", "mr_b", "mr_c"):
        rec = json.loads((out / "records" / f"{case}.json").read_text())
        assert [m["name"] for m in rec["models"]] == list(MODELS)
        image = Path(rec["image"]) if Path(rec["image"]).is_absolute() else out / rec["image"]
        ref = sitk.ReadImage(str(image))
        for m in rec["models"]:
            lab = sitk.ReadImage(str(out / m["label"]))
            assert lab.GetSize() == ref.GetSize() and lab.GetOrigin() == pytest.approx(ref.GetOrigin())
            values = set(np.unique(sitk.GetArrayViewFromImage(lab)).tolist())
            if case == "fdg_d":
                assert rec["modality"] == "PET" and values <= {0, 1, 2, 3, 13}
            else:
                assert rec["modality"] == "MRI" and values <= set(range(14))
        assert values - {0}, f"{case}: the biased random model predicted no organ"


def test_scans_are_resampled_to_the_ct_median_spacing(setup, sharded):
    root, weights, images = setup
    out, _ = sharded
    rec = json.loads((out / "records" / "mr_a.json").read_text())
    assert rec["image"] == "images/mr_a_0000.nii.gz"
    resampled = sitk.ReadImage(str(out / rec["image"]))
    assert physical_spacing_xyz(resampled) == pytest.approx(CT_SPACING)
    assert resampled.GetSize() == (37, 37, 19)  # 28 * 2 / 1.5, 12 * 4 / 2.5 rounded
    assert rec["spacing_xyz_mm"] == pytest.approx(CT_SPACING)
    assert any("resampled" in n for n in rec["notes"])
    # a scan already at the CT median spacing is used as it is (no copy)
    rec_b = json.loads((out / "records" / "mr_b.json").read_text())
    assert rec_b["image"] == str((images / "mr_b_0000.nii.gz").resolve())
    assert not (out / "images" / "mr_b_0000.nii.gz").exists()


def test_resume_skips_finished_cases_and_redoes_incomplete_ones(setup, sharded, capsys):
    root, weights, images = setup
    out, _ = sharded
    label = out / "second" / "mr_c.nii.gz"
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    args = ["predict", "--images", str(images), "--weights", str(weights), "--models", ",".join(MODELS),
            "--out", str(out), "--stats", str(root / "stats.json"), "--device", "cpu", "--backend", "torch",
            "--threads", "1", "--no-progress"]
    assert main(args + ["--shard", "1/2"]) == 0
    assert "0 predicted, 2 already finished, 0 failed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == mtimes
    # an interrupted case (a label file lost) is predicted again, alone
    label.unlink()
    summary = run_predict(_config(root, weights, images, out, shard=(1, 1)))
    assert summary.predicted == ["mr_c"] and sorted(summary.skipped) == ["fdg_d", "mr_a", "mr_b"]
    assert label.is_file()
    # other models, or another target spacing, make a finished case unfinished
    models = resolve_models(weights, MODELS)
    assert is_finished(out, "mr_b", models, CT_SPACING)
    assert not is_finished(out, "mr_b", models[:2], CT_SPACING)
    assert not is_finished(out, "mr_b", models, None)
    os.utime(weights / "best" / "model.json")  # touching is not changing: the card's sha256 decides
    assert is_finished(out, "mr_b", resolve_models(weights, MODELS), CT_SPACING)


def test_bad_inputs_are_named(setup, tmp_path, capsys):
    root, weights, images = setup
    bad_images = tmp_path / "images"
    bad_images.mkdir()
    (bad_images / "broken_0000.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    summary = run_predict(_config(root, weights, bad_images, tmp_path / "pred"))
    assert list(summary.failed) == ["broken"] and "broken_0000.nii.gz" in summary.failed["broken"]
    assert not (tmp_path / "pred" / "records" / "broken.json").exists()
    base = ["predict", "--images", str(images), "--weights", str(weights), "--out", str(tmp_path / "p2"),
            "--native-spacing", "--no-progress"]
    assert main(base + ["--models", "best,nonexistent"]) == 2
    assert "nonexistent" in capsys.readouterr().out
    assert main(base + ["--models", "best"]) == 2
    assert "at least two models" in capsys.readouterr().out
    assert main(base + ["--models", "best,second", "--shard", "3/2"]) == 2
    assert "--shard" in capsys.readouterr().out
    with pytest.raises(PredictError, match="no <case>_0000.nii.gz"):
        find_images(tmp_path / "pred")
