"""`python -m eval score`: folders, CSV contract, summary, plots and problem reporting."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from eval.__main__ import main
from eval.score import output_paths

REPO = Path(__file__).resolve().parents[1]
AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), str(path))


def _labels() -> np.ndarray:
    volume = np.zeros((20, 18, 12), np.uint8)
    volume[2:10, 2:10, 2:8] = 1
    volume[12:16, 3:7, 3:9] = 2
    volume[12:16, 10:14, 3:9] = 13
    volume[3:6, 12:16, 2:6] = 3
    return volume


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def folders(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    gt = _labels()
    for case in ("case_a", "case_b", "case_c", "case_d"):
        _save(labels / f"{case}.nii.gz", gt)
    _save(preds / "case_a.nii.gz", gt)  # perfect
    # case_b: missing
    (preds / "case_c.nii.gz").write_bytes(b"this is not a nifti file")  # unreadable
    _save(preds / "case_d.nii.gz", gt[:, :, :10])  # wrong shape
    _save(preds / "case_x.nii.gz", gt)  # no label
    return tmp_path, labels, preds


def test_score_folder_contract_and_problem_reports(folders, capsys):
    root, labels, preds = folders
    out_csv = root / "out" / "scores.csv"
    code = main(["score", str(preds), str(labels), "--csv", str(out_csv), "--organs", "1,2,3,13"])
    assert code == 0
    rows = _read_csv(out_csv)
    assert list(rows[0].keys()) == ["case", "organ", "dsc", "nsd"]
    assert len(rows) == 4 * 4
    by_key = {(r["case"], int(r["organ"])): (float(r["dsc"]), float(r["nsd"])) for r in rows}
    assert all(by_key[("case_a", o)] == (1.0, 1.0) for o in (1, 2, 3, 13))
    for case in ("case_b", "case_c", "case_d"):  # scored as empty predictions
        assert all(by_key[(case, o)] == (0.0, 0.0) for o in (1, 2, 3, 13))
    printed = capsys.readouterr().out
    assert "case_b: no prediction" in printed
    assert "case_c.nii.gz: cannot read NIfTI" in printed
    assert "case_d.nii.gz: shape (20, 18, 10) differs from the label's (20, 18, 12)" in printed
    assert "case_x" in printed and "has no label" in printed
    assert "| 1 | liver | 4 | 0 | 0.2500 |" in printed  # summary table printed
    paths = output_paths(out_csv)
    summary = _read_csv(paths["summary_csv"])
    assert [r["organ"] for r in summary] == ["1", "2", "3", "13", "all"]
    assert float(summary[0]["dsc_mean"]) == 0.25 and float(summary[0]["dsc_sd"]) == pytest.approx(0.5)
    assert float(summary[-1]["dsc_mean"]) == 0.25
    assert paths["summary_md"].read_text().startswith("| organ | name |")
    assert paths["boxplot_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out_csv.parent.glob(".*tmp"))  # temporary files renamed away


def test_all_13_mri_organs_by_default_and_pet_scheme(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    gt = _labels()
    gt[gt == 13] = 4  # PET scheme: 4 = left kidney
    _save(labels / "fdg_1.nii.gz", gt)
    pred = gt.copy()
    pred[pred == 4] = 0
    _save(preds / "fdg_1.nii.gz", pred)
    assert main(["score", str(preds), str(labels), "--csv", str(tmp_path / "mri.csv"), "--no-plots"]) == 0
    assert [int(r["organ"]) for r in _read_csv(tmp_path / "mri.csv")] == list(range(1, 14))
    assert main(["score", str(preds), str(labels), "--csv", str(tmp_path / "pet.csv"), "--modality", "pet"]) == 0
    rows = _read_csv(tmp_path / "pet.csv")
    assert [(int(r["organ"]), float(r["dsc"])) for r in rows] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.0)]


def test_geometry_ignored_by_default_refused_when_strict(tmp_path, capsys):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    gt = _labels()
    _save(labels / "c1.nii.gz", gt)
    shifted_origin = AFFINE.copy()
    shifted_origin[:3, 3] = [10.0, 0.0, 0.0]
    _save(preds / "c1.nii.gz", gt, shifted_origin)
    assert main(["score", str(preds), str(labels), "--csv", str(tmp_path / "a.csv"), "--no-plots"]) == 0
    assert "geometry differs" in capsys.readouterr().out
    assert {r["dsc"] for r in _read_csv(tmp_path / "a.csv")} == {"1.0000"}
    code = main(["score", str(preds), str(labels), "--csv", str(tmp_path / "b.csv"), "--strict-geometry", "--no-plots"])
    assert code == 2
    assert "--strict-geometry" in capsys.readouterr().out
    rows = _read_csv(tmp_path / "b.csv")
    assert float(rows[0]["dsc"]) == 0.0  # liver present in the label, refused prediction = empty


def test_spacing_comes_from_the_label_header(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[5:15, 5:15, 5:15] = 1
    pred = np.roll(gt, 3, axis=2)
    _save(labels / "fine.nii.gz", gt, np.diag([1.0, 1.0, 1.0, 1.0]))
    _save(labels / "coarse.nii.gz", gt, np.diag([1.0, 1.0, 3.0, 1.0]))
    _save(preds / "fine.nii.gz", pred, np.diag([1.0, 1.0, 3.0, 1.0]))  # prediction headers swapped
    _save(preds / "coarse.nii.gz", pred, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert main(["score", str(preds), str(labels), "--csv", str(tmp_path / "s.csv"), "--organs", "1", "--no-plots"]) == 0
    nsd = {r["case"]: float(r["nsd"]) for r in _read_csv(tmp_path / "s.csv")}
    assert nsd["fine"] == 1.0 and nsd["coarse"] < 1.0


def test_unreadable_label_is_reported_and_skipped(tmp_path, capsys):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir()
    preds.mkdir()
    (labels / "bad.nii.gz").write_bytes(b"\x1f\x8b broken")
    _save(labels / "good.nii.gz", _labels())
    _save(preds / "good.nii.gz", _labels())
    code = main(["score", str(preds), str(labels), "--csv", str(tmp_path / "s.csv"), "--no-plots"])
    assert code == 2
    assert "bad.nii.gz: cannot read NIfTI" in capsys.readouterr().out
    assert {r["case"] for r in _read_csv(tmp_path / "s.csv")} == {"good"}


def test_usage_errors(tmp_path, capsys):
    assert main(["score", str(tmp_path / "nope"), str(tmp_path), "--csv", str(tmp_path / "s.csv")]) == 1
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", str(tmp_path), str(tmp_path), "--csv", "x.csv", "--organs", "liver"])
    assert main(["score", str(tmp_path), str(tmp_path), "--csv", str(tmp_path / "s.csv"), "--modality", "pet", "--organs", "13"]) == 1


def test_module_entry_point_runs(folders):
    root, labels, preds = folders
    out_csv = root / "cli.csv"
    result = subprocess.run(
        [sys.executable, "-m", "eval", "score", str(preds), str(labels), "--csv", str(out_csv), "--organs", "1,2,3,13", "--no-plots"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(_read_csv(out_csv)) == 16
    assert "mean over organs" in result.stdout
