"""Every bad input gets one clear line naming the file, the other cases still run, nothing half-written."""
import gzip
import os

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import write_image
from phantoms import blob_image
from inference.cli import main


def _good(path, shape=(24, 40, 40), **kw):
    return write_image(blob_image(shape), path, spacing=(4.0, 4.0, 5.0), **kw)


def _run(inp, out, weights, capsys, *extra):
    code = main([str(inp), str(out), "--weights", str(weights), "--device", "cpu", *extra])
    return code, capsys.readouterr().out


def _bad_files(d):
    """name -> (writer, expected words in the FAILED line)."""
    good = d / "source.nii.gz"
    _good(good)
    raw = good.read_bytes()

    def plain_nii(p):
        p.write_bytes(gzip.decompress(raw))

    def truncated(p):
        p.write_bytes(raw[: len(raw) // 2])

    def not_nifti(p):
        p.write_bytes(gzip.compress(b"this is a text file, not an image\n" * 50))

    def two_d(p):
        sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(30, 30).astype(np.float32)), str(p))

    def four_d(p):
        img = sitk.JoinSeries([sitk.GetImageFromArray(blob_image((8, 16, 16), seed=i)) for i in range(3)])
        sitk.WriteImage(img, str(p))

    def single_slice(p):
        write_image(np.random.rand(1, 30, 30).astype(np.float32), p)

    def all_nan(p):
        write_image(np.full((8, 16, 16), np.nan, np.float32), p)

    def empty(p):
        p.write_bytes(b"")

    return {
        "plain_0000.nii.gz": (plain_nii, "not gzip"),
        "truncated_0000.nii.gz": (truncated, "truncated"),
        "textfile_0000.nii.gz": (not_nifti, "not a NIfTI"),
        "flat_0000.nii.gz": (two_d, "2D"),
        "series_0000.nii.gz": (four_d, "4D"),
        "slice_0000.nii.gz": (single_slice, "2D"),
        "nan_0000.nii.gz": (all_nan, "NaN"),
        "empty_0000.nii.gz": (empty, "empty file"),
    }


def test_each_bad_input_fails_alone(tmp_path, random_model, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    bad = _bad_files(tmp_path)
    for name, (writer, _) in bad.items():
        writer(inp / name)
    _good(inp / "good_0000.nii.gz")
    _good(inp / "nolabel.nii.gz")  # no _0000: cannot be named
    (inp / "notes.txt").write_text("not an image")
    code, text = _run(inp, out, random_model, capsys)
    assert code == 1
    lines = text.splitlines()
    for name, (_, words) in bad.items():
        hits = [line for line in lines if name in line]
        assert len(hits) == 1 and hits[0].startswith("FAILED") and words in hits[0], (name, hits)
    assert any(line.startswith("FAILED nolabel.nii.gz") and "_0000" in line for line in lines)
    assert any(line.startswith("skipped: notes.txt") for line in lines)
    assert any(line.startswith("ok good_0000.nii.gz") for line in lines)
    assert sorted(os.listdir(out)) == ["good.nii.gz"]  # nothing partial, nothing for the failures
    assert f"{len(bad) + 1} of {len(bad) + 2} case(s) failed" in text


def test_odd_but_valid_inputs_are_segmented(tmp_path, random_model, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    arr = blob_image((20, 40, 40))
    arr[3, 4, 5] = np.nan
    arr[4, 4, 5] = np.inf
    write_image(arr, inp / "somenan_0000.nii.gz", spacing=(4.0, 4.0, 5.0))
    write_image(blob_image((6, 10, 10)), inp / "tiny_0000.nii.gz", spacing=(1.0, 1.0, 1.0))  # << one patch
    write_image(blob_image((8, 200, 200)), inp / "aniso_0000.nii.gz", spacing=(0.4, 0.4, 10.0))
    t = np.radians(25)
    write_image(blob_image((20, 40, 40)), inp / "oblique_0000.nii.gz", spacing=(4.0, 4.0, 5.0),
                direction=(np.cos(t), -np.sin(t), 0, np.sin(t), np.cos(t), 0, 0, 0, 1))
    write_image(blob_image((20, 40, 40)), inp / "flipped_0000.nii.gz", spacing=(4.0, 4.0, 5.0),
                direction=(-1, 0, 0, 0, -1, 0, 0, 0, -1))
    vol4 = sitk.JoinSeries([sitk.GetImageFromArray(blob_image((20, 40, 40)))])  # 4D with one volume
    sitk.WriteImage(vol4, str(inp / "single4d_0000.nii.gz"))
    code, text = _run(inp, out, random_model, capsys)
    assert code == 0, text
    notes = {line.split()[1]: line for line in text.splitlines() if line.startswith("ok ")}
    assert "2 NaN/Inf voxels" in notes["somenan_0000.nii.gz"]
    assert "anisotropic" in notes["aniso_0000.nii.gz"]
    assert "oblique 25.0 deg" in notes["oblique_0000.nii.gz"]
    assert "flipped" in notes["flipped_0000.nii.gz"]
    for case in ("somenan", "tiny", "aniso", "oblique", "flipped", "single4d"):
        src = sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))
        seg = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert seg.GetSize()[:3] == src.GetSize()[:3] and seg.GetPixelID() == sitk.sitkUInt8
    qc = tmp_path / "out_qc" / "tiny.json"
    assert qc.is_file() and '"fine"' in qc.read_text()


def test_empty_input_folder(tmp_path, random_model, capsys):
    (tmp_path / "in").mkdir()
    code, text = _run(tmp_path / "in", tmp_path / "out", random_model, capsys)
    assert code == 2 and "no <case>_0000.nii.gz image" in text


def test_missing_input_folder(tmp_path, random_model, capsys):
    code, text = _run(tmp_path / "nope", tmp_path / "out", random_model, capsys)
    assert code == 2 and "does not exist" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the file-in-the-way case")
def test_unwritable_output_folder_permissions(tmp_path, random_model, capsys):
    (tmp_path / "in").mkdir()
    _good(tmp_path / "in" / "a_0000.nii.gz")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    code, text = _run(tmp_path / "in", out, random_model, capsys)
    assert code == 2 and "not writable" in text


def test_unwritable_output_folder(tmp_path, random_model, capsys):
    (tmp_path / "in").mkdir()
    _good(tmp_path / "in" / "a_0000.nii.gz")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, text = _run(tmp_path / "in", blocker / "out", random_model, capsys)
    assert code == 2 and str(blocker / "out") in text and "cannot create the output folder" in text
    code, text = _run(tmp_path / "in", blocker, random_model, capsys)
    assert code == 2 and "not a folder" in text


def test_write_failure_leaves_no_partial_file(tmp_path, random_model, capsys, monkeypatch):
    import inference.io as io

    (tmp_path / "in").mkdir()
    _good(tmp_path / "in" / "a_0000.nii.gz")
    _good(tmp_path / "in" / "b_0000.nii.gz")
    real = io.sitk.WriteImage

    def failing(img, path, *args):
        real(img, path, *args)  # the temporary file exists...
        if "a." in os.path.basename(path):
            raise RuntimeError("disk full")  # ...and the write then fails

    monkeypatch.setattr(io.sitk, "WriteImage", failing)
    code, text = _run(tmp_path / "in", tmp_path / "out", random_model, capsys)
    assert code == 1 and "FAILED a_0000.nii.gz" in text and "disk full" in text
    assert sorted(os.listdir(tmp_path / "out")) == ["b.nii.gz"]


def test_tampered_or_missing_weights_refused(tmp_path, capsys):
    from helpers import make_random_model

    w = tmp_path / "w"
    make_random_model(w / "m")
    (tmp_path / "in").mkdir()
    _good(tmp_path / "in" / "a_0000.nii.gz")
    with open(w / "m" / "fine.onnx", "ab") as f:
        f.write(b"\0")
    code, text = _run(tmp_path / "in", tmp_path / "out", w, capsys)
    assert code == 2 and "fine.onnx" in text and "sha256" in text
    (w / "m" / "fine.onnx").unlink()
    code, text = _run(tmp_path / "in", tmp_path / "out", w, capsys)
    assert code == 2 and "fine.onnx" in text and "missing" in text
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_case_no_model_serves_fails_alone_and_the_others_run(tmp_path, capsys):
    """A PET case with an MRI-only model is FAILED with its reason; the MRI cases before and after it are
    written (the loop does not stop at the first case it cannot serve)."""
    from helpers import make_random_model

    w = tmp_path / "w"
    make_random_model(w / "m", modalities=("MRI",))
    (tmp_path / "in").mkdir()
    for name in ("a_0000.nii.gz", "b_fdg_0000.nii.gz", "c_0000.nii.gz"):
        _good(tmp_path / "in" / name)
    code, text = _run(tmp_path / "in", tmp_path / "out", w, capsys)
    assert code == 1 and "FAILED b_fdg_0000.nii.gz" in text and "PET" in text
    assert sorted(os.listdir(tmp_path / "out")) == ["a.nii.gz", "c.nii.gz"]


def test_constant_image_gets_an_all_background_mask_and_a_warning(tmp_path, random_model, capsys):
    """A constant image is a valid scan with nothing in it: the organizers count a missing output as a failed
    case, so it gets an all-background mask with its geometry, a warning line and a QC note (exit 0)."""
    import json

    import SimpleITK as sitk

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    write_image(np.full((8, 16, 16), 7, np.int16), inp / "constant_0000.nii.gz", spacing=(0.8, 0.9, 3.0))
    _good(inp / "good_0000.nii.gz")
    code, text = _run(inp, out, random_model, capsys)
    assert code == 0, text
    assert any(line.startswith("warning: constant_0000.nii.gz") and "all-background" in line
               for line in text.splitlines())
    mask = sitk.ReadImage(str(out / "constant.nii.gz"))
    ref = sitk.ReadImage(str(inp / "constant_0000.nii.gz"))
    assert mask.GetSize() == ref.GetSize() and mask.GetSpacing() == ref.GetSpacing()
    assert mask.GetPixelID() == sitk.sitkUInt8 and not sitk.GetArrayViewFromImage(mask).any()
    qc = json.loads((tmp_path / "out_qc" / "constant.json").read_text())
    assert any("constant image" in n for n in qc["notes"])
