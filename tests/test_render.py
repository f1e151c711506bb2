"""CT renderer: HU values with analytic answers, body-mask extraction, no MRI intensity reaching the CT."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from training.render import RenderConfig, body_mask_from_image, render_case, render_ct, write_body_mask
from training.render.ct import ORGAN_HU

from helpers import REAL, write_image
from phantoms import abdomen_phantom

SPACING = (5.0, 2.0, 2.0)


def _phantom(shape=(12, 80, 96)):
    """The abdomen phantom (see helpers.abdomen_phantom)."""
    return abdomen_phantom(shape)


# noise, texture, blur and per-case jitter off: every voxel gets its tissue's value exactly
EXACT = RenderConfig(phase="native", texture_hu=0.0, noise_hu=0.0, organ_jitter_hu=0.0, blur_mm=(0.0, 0.0, 0.0),
                     gas_pockets=0)


def test_exact_values_per_tissue():
    labels, body = _phantom()
    hu, phase = render_ct(labels, body, SPACING, np.random.default_rng(0), EXACT)
    assert phase == "native" and hu.dtype == np.int16 and hu.shape == labels.shape
    assert np.all(hu[~body] == -1000)
    for organ in (1, 2, 3, 13):
        assert np.all(hu[labels == organ] == round(ORGAN_HU[organ]["native"])), organ
    skin = body & (ndimage.distance_transform_edt(body, sampling=(1e9, 2.0, 2.0)) <= EXACT.skin_mm)
    assert np.all(hu[skin & (labels == 0)] == round(EXACT.skin_hu))
    inside = body & (labels == 0) & ~skin
    values = set(np.unique(hu[inside]).tolist())
    allowed = {round(v) for v in (EXACT.fat_hu, EXACT.muscle_hu, EXACT.fat_hu + 10.0, EXACT.soft_tissue_hu,
                                  EXACT.cortical_hu, EXACT.cancellous_hu)}
    assert values <= allowed, values - allowed
    assert round(EXACT.cortical_hu) in values, "a vertebra is drawn"


def test_contrast_phase_and_kidney_cortex():
    labels, body = _phantom()
    cfg = replace(EXACT, phase="portal")
    hu, _ = render_ct(labels, body, SPACING, np.random.default_rng(0), cfg)
    kidney = labels == 2
    core = ndimage.binary_erosion(kidney, structure=np.ones((1, 3, 3), bool), iterations=3)
    assert np.all(hu[core] == round(ORGAN_HU[2]["portal"]))
    assert np.all(hu[kidney & ~ndimage.binary_erosion(kidney, structure=np.ones((1, 3, 3), bool))]
                  == round(ORGAN_HU[2]["portal"] + cfg.kidney_cortex_hu))
    assert np.all(hu[labels == 1] == round(ORGAN_HU[1]["portal"]))


def test_noise_statistics_and_determinism():
    labels, body = _phantom()
    cfg = replace(EXACT, noise_hu=20.0)
    a, _ = render_ct(labels, body, SPACING, np.random.default_rng(3), cfg)
    b, _ = render_ct(labels, body, SPACING, np.random.default_rng(3), cfg)
    np.testing.assert_array_equal(a, b)
    air = a[~body].astype(float)
    air = air[air > -1024]  # clipping at the CT floor cuts the lower tail
    assert abs(np.median(a[~body]) + 1000) <= 2
    liver = a[labels == 1].astype(float)
    assert abs(liver.mean() - ORGAN_HU[1]["native"]) < 2.0 and 18.0 < liver.std() < 22.0


def test_random_phase_is_one_of_the_phases_and_bad_input():
    labels, body = _phantom()
    seen = {render_ct(labels, body, SPACING, np.random.default_rng(s), replace(EXACT, phase="random"))[1]
            for s in range(12)}
    assert seen <= {"native", "arterial", "portal"} and len(seen) >= 2
    with pytest.raises(ValueError, match="same 3D shape"):
        render_ct(labels, body[:-1], SPACING, np.random.default_rng(0))
    bad = labels.copy()
    bad[0, 0, 0] = 20
    with pytest.raises(ValueError, match="label 20"):
        render_ct(bad, body, SPACING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="phase"):
        RenderConfig(phase="delayed")


def test_body_mask_from_image_finds_an_ellipse():
    _, body = _phantom()
    rng = np.random.default_rng(0)
    image = np.where(body, 300.0, 5.0) + rng.normal(0, 10, body.shape)
    image[:, 30:34, 40:50] = 2.0  # a dark hole inside the body (gas) is filled
    mask = body_mask_from_image(image, SPACING)
    # within two voxels of the true boundary everywhere (smoothing + a low threshold grow it by about one)
    st = np.ones((1, 3, 3), bool)
    assert np.all(mask[ndimage.binary_erosion(body, st, iterations=2)])
    assert not np.any(mask[~ndimage.binary_dilation(body, st, iterations=2)])
    with pytest.raises(ValueError, match="constant"):
        body_mask_from_image(np.zeros((4, 8, 8)), SPACING)


def test_render_case_uses_only_the_body_mask(tmp_path):
    """Two scans with other intensities but the same body give the same CT: no intensity reaches the rendering.
    (scan b = an affine map of scan a: the same body mask, other values; render_ct itself takes no image at all)"""
    labels, body = _phantom()
    spacing_xyz = tuple(reversed(SPACING))
    direction = (1, 0, 0, 0, -1, 0, 0, 0, 1)  # y flipped on disk, like CHAOS files
    write_image(labels, tmp_path / "c.nii.gz", spacing_xyz, direction=direction)
    rng = np.random.default_rng(1)
    scan_a = np.where(body, 400.0, 3.0) + rng.normal(0, 5, body.shape)
    scan_b = scan_a * 2.5 + 70.0
    cts = []
    for name, scan in (("a", scan_a), ("b", scan_b)):
        write_image(scan.astype(np.float32), tmp_path / f"{name}_0000.nii.gz", spacing_xyz, direction=direction)
        write_body_mask(tmp_path / f"{name}_0000.nii.gz", tmp_path / "c.nii.gz", tmp_path / f"body_{name}.nii.gz")
        render_case(tmp_path / "c.nii.gz", tmp_path / f"body_{name}.nii.gz", tmp_path / f"ct_{name}_0000.nii.gz", seed=7)
        cts.append(sitk.ReadImage(str(tmp_path / f"ct_{name}_0000.nii.gz")))
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"body_{n}.nii.gz"))) for n in "ab"]
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(cts[0]), sitk.GetArrayFromImage(cts[1]))
    ref = sitk.ReadImage(str(tmp_path / "c.nii.gz"))
    assert cts[0].GetSpacing() == ref.GetSpacing() and cts[0].GetDirection() == ref.GetDirection()
    assert cts[0].GetOrigin() == ref.GetOrigin()
    # the vertebra is posterior (canonical +y = posterior; on disk y is flipped, so it sits at low array y)
    ct = sitk.GetArrayFromImage(cts[0])
    bone = np.argwhere(ct > 500)
    assert len(bone) and bone[:, 1].mean() < 40


@pytest.mark.skipif(not (REAL / "mr_chaos_t2").is_dir(), reason="needs ../shared/data/real")
def test_real_chaos_case_renders_ct_like_values(tmp_path):
    chaos = REAL / "mr_chaos_t2"
    write_body_mask(chaos / "images/chaos_t2_01_0000.nii.gz", chaos / "labels/chaos_t2_01.nii.gz", tmp_path / "b.nii.gz")
    info = render_case(chaos / "labels/chaos_t2_01.nii.gz", tmp_path / "b.nii.gz", tmp_path / "ct_0000.nii.gz", seed=0,
                       config=RenderConfig(phase="portal"))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ct_0000.nii.gz")))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(chaos / "labels/chaos_t2_01.nii.gz")))
    body = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b.nii.gz"))) > 0
    assert info["phase"] == "portal"
    assert 0.2 < body.mean() < 0.8
    assert np.median(ct[~body]) < -950
    assert 80 < np.median(ct[lab == 1]) < 140  # portal-venous liver ~110 HU
    assert 150 < np.median(ct[lab == 2]) < 230  # enhancing kidney
