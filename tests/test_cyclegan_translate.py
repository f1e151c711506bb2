"""translate: geometry of the outputs equals the input's, labels copied, bad inputs named in the error."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from training.cyclegan.__main__ import main
from training.cyclegan.data import find_cases, read_case
from training.cyclegan.model import OrganAttentionCycleGAN
from training.cyclegan.options import CycleGANOptions
from phantoms import write_case
from training.cyclegan.train import save_checkpoint
from training.cyclegan.translate import load_checkpoint, translate

torch.set_num_threads(1)

TINY = dict(ngf=4, n_blocks=1, ndf=4, n_layers_d=2, seg_filters=4, seg_depth=2, slice_size=32, spacing_mm=3.0)

GEOMETRIES = {
    "axial_lps": dict(shape_zyx=(4, 30, 34), spacing=(1.6, 1.4, 5.0), origin=(-120.5, 30.0, 7.25)),
    "flipped": dict(shape_zyx=(3, 26, 40), spacing=(2.2, 2.2, 3.0), origin=(10.0, -20.0, -300.0),
                    direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)),
    "sagittal_order": dict(shape_zyx=(28, 24, 3), spacing=(6.0, 1.8, 1.5), origin=(0.0, 0.0, 0.0),
                           direction=(0, 1, 0, 0, 0, -1, 1, 0, 0)),   # index i (last array axis) along z
}


@pytest.fixture(scope="module")
def ct_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    for i, (name, geo) in enumerate(GEOMETRIES.items()):
        write_case(root / "images", root / "labels", name, seed=i, **geo)
    return root / "images", root / "labels"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "latest.pt"
    model = OrganAttentionCycleGAN(CycleGANOptions(**TINY))
    save_checkpoint(model, path, epoch=3, step=12, target_window=(0.0, 800.0))
    return path


def test_translate_keeps_geometry_and_copies_labels(ct_dirs, checkpoint, tmp_path):
    images, labels = ct_dirs
    out = tmp_path / "out"
    assert main(["translate", "--checkpoint", str(checkpoint), "--ct-images", str(images), "--ct-labels",
                 str(labels), "--out", str(out), "--quiet"]) == 0
    for name in GEOMETRIES:
        src = sitk.ReadImage(str(images / f"{name}_0000.nii.gz"))
        fake = sitk.ReadImage(str(out / "images" / f"{name}_0000.nii.gz"))
        lab = sitk.ReadImage(str(out / "labels" / f"{name}.nii.gz"))
        src_lab = sitk.ReadImage(str(labels / f"{name}.nii.gz"))
        for img in (fake, lab):
            assert img.GetSize() == src.GetSize()
            np.testing.assert_allclose(img.GetSpacing(), src.GetSpacing(), atol=1e-6)
            np.testing.assert_allclose(img.GetOrigin(), src.GetOrigin(), atol=1e-5)
            np.testing.assert_allclose(img.GetDirection(), src.GetDirection(), atol=1e-6)
        assert lab.GetPixelID() == sitk.sitkUInt8
        np.testing.assert_array_equal(sitk.GetArrayFromImage(lab), sitk.GetArrayFromImage(src_lab))
        arr = sitk.GetArrayFromImage(fake)
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
        assert arr.min() >= 0.0 - 1e-3 and arr.max() <= 800.0 + 1e-3      # the checkpoint's target window
        assert arr.std() > 0
    meta = json.loads((out / "translate.json").read_text())
    assert meta["epoch"] == 3 and sorted(meta["cases"]) == sorted(GEOMETRIES)
    assert not any(p.name.startswith(".tmp") for p in out.rglob("*"))


def test_translate_is_resumable(ct_dirs, checkpoint, tmp_path):
    images, labels = ct_dirs
    out = tmp_path / "out"
    assert len(translate(checkpoint, images, labels, out, progress=False)) == 3
    first = (out / "images" / "flipped_0000.nii.gz").stat().st_mtime_ns
    assert translate(checkpoint, images, labels, out, progress=False) == []          # all done: skipped
    (out / "labels" / "flipped.nii.gz").unlink()
    assert translate(checkpoint, images, labels, out, progress=False) == ["flipped"]
    assert translate(checkpoint, images, labels, out, progress=False, overwrite=True) != []
    assert (out / "images" / "flipped_0000.nii.gz").stat().st_mtime_ns != first


def test_translation_is_the_generator_on_axial_slices(ct_dirs, checkpoint, tmp_path):
    """The written volume equals G_A on the prepared slices mapped back (checks the inverse chain end to end)."""
    from training.cyclegan.preprocess import IntensityWindow, prepare_image, restore_volume
    from training.cyclegan.translate import translate_prepared
    images, labels = ct_dirs
    out = tmp_path / "out"
    translate(checkpoint, images, labels, out, progress=False)
    model, ckpt = load_checkpoint(checkpoint)
    case = [c for c in find_cases(images, labels) if c.name == "sagittal_order"][0]
    image, _ = read_case(case)
    vol = prepare_image(image, "ct", model.opts)
    assert vol.image.shape[0] == 3                     # axial slices = the array's last axis here
    expected = restore_volume(translate_prepared(model, vol), vol.transform, IntensityWindow(*ckpt["target_window"]))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images" / "sagittal_order_0000.nii.gz")))
    np.testing.assert_allclose(written, expected, atol=1e-4)


def test_bad_inputs_name_the_file(tmp_path, checkpoint, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    write_case(images, labels, "good", (3, 20, 20))
    write_case(images, None, "short", (3, 20, 20))
    write_case(tmp_path / "other", labels, "short", (4, 20, 20))      # label of another size
    with pytest.raises(ValueError, match=r"short\.nii\.gz.*size"):
        translate(checkpoint, images, labels, tmp_path / "out", progress=False)
    assert main(["translate", "--checkpoint", str(checkpoint), "--ct-images", str(images), "--ct-labels",
                 str(labels), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "short.nii.gz" in capsys.readouterr().err

    (images / "short_0000.nii.gz").unlink()
    (labels / "short.nii.gz").unlink()
    (images / "broken_0000.nii.gz").write_bytes(b"this is not a nifti file")
    (labels / "broken.nii.gz").write_bytes(b"neither is this")
    with pytest.raises(ValueError, match=r"cannot read image .*broken_0000\.nii\.gz"):
        translate(checkpoint, images, labels, tmp_path / "out", progress=False)
    (images / "broken_0000.nii.gz").unlink()
    write_case(images, None, "nolabel", (3, 20, 20))
    with pytest.raises(FileNotFoundError, match=r"nolabel_0000\.nii\.gz"):
        translate(checkpoint, images, labels, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="not a CycleGAN checkpoint"):
        torch.save({"weights": {}}, tmp_path / "bogus.pt")
        load_checkpoint(tmp_path / "bogus.pt")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_label_values_out_of_range_are_an_error(tmp_path):
    img, lab = write_case(tmp_path / "i", tmp_path / "l", "c", (2, 10, 10))
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(lab)))
    arr[0, 0, 0] = 20
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(sitk.ReadImage(str(img)))
    sitk.WriteImage(bad, str(lab))
    with pytest.raises(ValueError, match=r"c\.nii\.gz has values in \[0, 20\]"):
        read_case(find_cases(tmp_path / "i", tmp_path / "l")[0], num_classes=14)
