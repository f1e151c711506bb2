"""CycleGAN from in-memory arrays (data.ArrayCase): the same training, quality numbers and translations as from
NIfTI folders, and no SimpleITK needed for any of it."""
import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from phantoms import slice_phantom
from test_cyclegan_train import data, log_lines, run  # noqa: F401  (data: fixture)
from test_cyclegan_translate import GEOMETRIES, TINY, checkpoint, ct_dirs  # noqa: F401  (fixtures)
from training.cyclegan.data import ArrayCase, cache_cases, find_cases, load_case
from training.cyclegan.options import CycleGANOptions
from training.cyclegan.train import train_cases
from training.cyclegan.translate import load_checkpoint, translate, translate_case

REPO = Path(__file__).resolve().parents[1]
IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)


def read_array_case(image_path: Path, label_path: Path | None = None) -> ArrayCase:
    """A NIfTI case as an ArrayCase, read with SimpleITK here (not through data.py's readers)."""
    image = sitk.ReadImage(str(image_path))
    label = None if label_path is None else sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    name = Path(image_path).name[: -len("_0000.nii.gz")]
    return ArrayCase(name, sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetDirection(), label)


def folder_cases(images: Path, labels: Path | None = None) -> list[ArrayCase]:
    return [read_array_case(p, None if labels is None else labels / p.name.replace("_0000", ""))
            for p in sorted(images.glob("*_0000.nii.gz"))]


def curve_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "trained_s"} for row in csv.DictReader(fh)]


def test_training_from_arrays_equals_training_from_folders(data, tmp_path):  # noqa: F811
    files_out, arrays_out = tmp_path / "files", tmp_path / "arrays"
    assert run(data, files_out, "--epochs", "2", "--quality-every", "1", "--save-every", "1",
               "--target-labels", str(data / "mr_lab")) == 0
    opts = CycleGANOptions.load(files_out / "options.json")
    ct = folder_cases(data / "ct_img", data / "ct_lab")
    mr_labelled = folder_cases(data / "mr_img", data / "mr_lab")
    mr = [dataclasses.replace(c, label=None) for c in mr_labelled]
    q = train_cases(ct, mr, arrays_out, opts, target_eval=mr_labelled, progress=False)

    # CPU, one process, the same seeds and thread count: every number and weight is bit-identical
    q_files = json.loads((files_out / "quality.json").read_text())
    assert q == json.loads((arrays_out / "quality.json").read_text())
    for key in ("checkpoint", "trained_s"):              # the run folder's path and wall-clock time differ
        q.pop(key), q_files.pop(key)
    assert q == q_files and q["target_dice"]["mean"] is not None and q["held_out"] is True
    assert curve_rows(arrays_out / "quality_curve.csv") == curve_rows(files_out / "quality_curve.csv")
    assert len(curve_rows(arrays_out / "quality_curve.csv")) == 2
    assert log_lines(arrays_out) == log_lines(files_out)
    assert (arrays_out / "options.json").read_text() == (files_out / "options.json").read_text()
    assert sorted(p.name for p in (arrays_out / "grids").rglob("*.png")) == \
        sorted(p.name for p in (files_out / "grids").rglob("*.png"))
    steps = {"epoch_1.pt": 2, "epoch_2.pt": 4, "latest.pt": 4}
    assert {p.name for p in (arrays_out / "checkpoints").iterdir()} == set(steps)
    for name, step in steps.items():
        a, f = (torch.load(d / "checkpoints" / name, weights_only=False) for d in (arrays_out, files_out))
        assert a["target_window"] == f["target_window"] and a["step"] == f["step"] == step
        assert a["weights"].keys() == f["weights"].keys()
        assert all(torch.equal(a["weights"][k], f["weights"][k]) for k in a["weights"]), name

    # resuming from arrays: nothing left to train, the cache (keyed by the arrays' hash) is not rewritten
    cached = {p: p.stat().st_mtime_ns for p in (arrays_out / "cache").rglob("*.npy")}
    assert len(cached) == 2 * 1 + 2            # one CT case trained on (image + label), two MR images
    train_cases(ct, mr, arrays_out, opts, progress=False)
    assert len(log_lines(arrays_out)) == 4
    assert {p: p.stat().st_mtime_ns for p in cached} == cached


def test_array_cache_is_keyed_by_content(tmp_path):
    image, label = slice_phantom((3, 20, 24), "ct", seed=1)
    case = ArrayCase("c", image, (3.0, 3.0, 5.0), IDENTITY, label)
    opts = CycleGANOptions(**TINY)
    (vol,) = cache_cases([case], "ct", opts, tmp_path, progress=False)
    stamp = vol.image_path.stat().st_mtime_ns
    np.testing.assert_array_equal(vol.label(), label)           # 3 mm in-plane, no crop: the grid is unchanged
    assert cache_cases([dataclasses.replace(case, image=image.copy())], "ct", opts, tmp_path, progress=False)
    assert vol.image_path.stat().st_mtime_ns == stamp            # equal arrays: cache reused
    changed = image.copy()
    changed[0, 0, 0] = 600.0                                     # the top of the CT window -> +1 after scaling
    (vol2,) = cache_cases([dataclasses.replace(case, image=changed)], "ct", opts, tmp_path, progress=False)
    assert vol2.image()[0, 0, 0] == 1.0


def test_array_case_checks():
    image, label = slice_phantom((3, 20, 24), "ct")
    with pytest.raises(ValueError, match="label shape"):
        ArrayCase("c", image, (1, 1, 1), IDENTITY, label[:2])
    with pytest.raises(ValueError, match="direction"):
        ArrayCase("c", image, (1, 1, 1), (1, 0, 0))
    bad = label.astype(np.int16)
    bad[0, 0, 0] = 14
    with pytest.raises(ValueError, match=r"label c has values in \[0, 14\], expected 0..13"):
        load_case(ArrayCase("c", image, (1, 1, 1), IDENTITY, bad), num_classes=14)
    assert load_case(ArrayCase("c", image, (1, 1, 1), IDENTITY, label.astype(np.float64)), 14).label.dtype == np.uint8


def test_translate_case_equals_translate_output(ct_dirs, checkpoint, tmp_path):  # noqa: F811
    images, labels = ct_dirs
    out = tmp_path / "out"
    assert len(translate(checkpoint, images, labels, out, progress=False)) == len(GEOMETRIES)
    model, ckpt = load_checkpoint(checkpoint)
    files = {c.name: c for c in find_cases(images, labels)}
    for case in folder_cases(images, labels):
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images" / f"{case.name}_0000.nii.gz")))
        got = translate_case(model, ckpt, case)
        assert got.dtype == np.float32 and got.shape == case.image.shape and got.std() > 0
        np.testing.assert_array_equal(got, written)
        np.testing.assert_array_equal(translate_case(model, ckpt, files[case.name]), written)   # a file case


@pytest.mark.parametrize("direction", [IDENTITY, (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_translate_case_with_identity_generator_is_the_window_mapping(checkpoint, direction):  # noqa: F811
    """G_A = identity, spacing = the options' 3 mm, no crop: translate_case maps each voxel v to
    (clip(v, -600, 600) + 600) / 1200 * 800 (CT window -> the checkpoint's target window (0, 800)), in place."""
    model, ckpt = load_checkpoint(checkpoint)
    model.G_A = torch.nn.Identity()
    assert model.opts.ct_window_hu == (-600.0, 600.0) and ckpt["target_window"] == [0.0, 800.0]
    image = np.random.default_rng(0).uniform(-1000, 1000, (3, 21, 26)).astype(np.float32)
    got = translate_case(model, ckpt, ArrayCase("v", image, (3.0, 3.0, 5.0), direction))
    np.testing.assert_allclose(got, (np.clip(image, -600, 600) + 600) / 1200 * 800, rtol=0, atol=1e-3)


NO_SITK = r"""
import json, sys
sys.modules["SimpleITK"] = None                      # any `import SimpleITK` now raises ImportError
import numpy as np, torch
torch.set_num_threads(1)
from training.cyclegan.data import ArrayCase
from training.cyclegan.options import CycleGANOptions
from training.cyclegan.train import train_cases
from training.cyclegan.translate import load_checkpoint, translate_case

vols, out, opts = np.load(sys.argv[1]), sys.argv[2], CycleGANOptions.from_dict(json.loads(sys.argv[3]))
ct = [ArrayCase(n, vols[n + "_image"], (2.0, 2.0, 5.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), vols[n + "_label"])
      for n in ("ct0", "ct1")]
mr = [ArrayCase("mr0", vols["mr0_image"], (2.5, 2.5, 6.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))]
q = train_cases(ct, mr, out, opts, progress=False)
model, ckpt = load_checkpoint(out + "/checkpoints/latest.pt")
fake = translate_case(model, ckpt, ct[1])
assert fake.shape == ct[1].image.shape and fake.dtype == np.float32 and np.isfinite(fake).all()
print(json.dumps({"steps": q["steps"], "dice": q["segmentation_dice"]["mean"], "sitk": sys.modules["SimpleITK"]}))
"""


def test_training_and_translation_run_without_simpleitk(tmp_path):
    vols = {}
    for name, shape, modality, seed in (("ct0", (4, 36, 40), "ct", 0), ("ct1", (4, 36, 40), "ct", 1),
                                        ("mr0", (3, 30, 30), "mri", 10)):
        vols[name + "_image"], vols[name + "_label"] = slice_phantom(shape, modality, seed)
    np.savez(tmp_path / "vols.npz", **vols)
    opts = CycleGANOptions(**TINY, epochs=1, iterations_per_epoch=2, num_workers=0, val_fraction=0.5,
                           grid_slices=2)
    proc = subprocess.run([sys.executable, "-c", NO_SITK, str(tmp_path / "vols.npz"), str(tmp_path / "run"),
                           json.dumps(opts.to_dict())], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == 2 and 0.0 <= result["dice"] <= 1.0 and result["sitk"] is None
    assert (tmp_path / "run" / "quality.json").exists() and list((tmp_path / "run" / "grids").glob("*.png"))


def test_a_translator_only_checkpoint_translates_the_same_and_holds_the_generator_alone(checkpoint, tmp_path):  # noqa: F811
    """translator_only keeps G_A's weights and nothing to resume from; loaded, it gives the full checkpoint's
    translation to the bit."""
    from training.cyclegan.translate import translator_only

    model, ckpt = load_checkpoint(checkpoint)
    small = translator_only(ckpt)
    assert small["weights"] and all(k.startswith("G_A.") for k in small["weights"]) and "training" not in small
    assert set(small["weights"]) == {k for k in ckpt["weights"] if k.startswith("G_A.")}
    torch.save(small, tmp_path / "translator.pt")
    model2, ckpt2 = load_checkpoint(tmp_path / "translator.pt")
    image = np.random.default_rng(1).uniform(-1000, 1000, (3, 21, 26)).astype(np.float32)
    case = ArrayCase("v", image, (3.0, 3.0, 5.0), IDENTITY)
    np.testing.assert_array_equal(translate_case(model2, ckpt2, case), translate_case(model, ckpt, case))
    with pytest.raises(ValueError, match="not a CycleGAN checkpoint"):
        translator_only({"weights": {}})
