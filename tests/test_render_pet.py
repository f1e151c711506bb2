"""FDG-PET-like rendering from label maps (training.render.pet): exact values with blur/noise/texture off, organs
never painted over by the hot non-organ structures, the body extension; random-contrast
renders (training.render.synth): one random value per tissue class, contrast order that changes between draws."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from training.render import PetRenderConfig, SynthRenderConfig, render_pet, render_synth
from training.render.synth import SOFT_TISSUE
from training.render.pet import ORGAN_SUV, RELATIVE_TO_LIVER
from training.render.synth import tissue_classes

from phantoms import abdomen_phantom

SPACING = (5.0, 2.0, 2.0)
# PSF, noise and texture off: every voxel holds the value drawn for its tissue
EXACT = PetRenderConfig(psf_fwhm_mm=(0.0, 0.0), noise=(0.0, 0.0), texture=0.0)


def _phantom(shape=(12, 80, 96)):
    """The abdomen phantom with larger kidneys (a collecting system deeper than 8 mm)."""
    return abdomen_phantom(shape, ((3, 10), (46, 62)), ((22, 36), (58, 72)))


def _single_value(values: np.ndarray) -> float:
    u = np.unique(values)
    assert len(u) == 1, u[:5]
    return float(u[0])


def test_exact_uptake_per_organ_and_zero_outside_the_body():
    labels, body = _phantom()
    cfg = replace(EXACT, urine_probability=0.0)
    for seed in range(4):
        suv, drawn = render_pet(labels, body, SPACING, np.random.default_rng(seed), cfg)
        assert suv.dtype == np.float32 and suv.shape == labels.shape
        assert np.all(suv[~body] == 0.0)
        liver = _single_value(suv[labels == 1])
        assert ORGAN_SUV[1][0] <= liver <= ORGAN_SUV[1][1] and liver == pytest.approx(drawn[1], abs=1e-3)
        lo, hi = RELATIVE_TO_LIVER[3]
        assert lo * liver - 1e-5 <= _single_value(suv[labels == 3]) <= hi * liver + 1e-5
        for kidney in (2, 13):   # no urine drawn: uniform parenchyma in its range
            assert ORGAN_SUV[kidney][0] <= _single_value(suv[labels == kidney]) <= ORGAN_SUV[kidney][1]
        assert "urine" not in drawn and "heart" not in drawn   # the heart is off by default


def test_hot_collecting_system_lies_deep_in_the_kidneys():
    labels, body = _phantom()
    suv, drawn = render_pet(labels, body, SPACING, np.random.default_rng(3), replace(EXACT, urine_probability=1.0))
    urine = drawn["urine"]
    assert EXACT.urine_suv[0] <= urine <= EXACT.urine_suv[1]
    for kidney in (2, 13):
        mask = labels == kidney
        depth = ndimage.distance_transform_edt(mask, sampling=SPACING)
        np.testing.assert_allclose(suv[depth > EXACT.pelvis_mm], urine, rtol=1e-3)  # drawn: 3 decimals
        assert np.all(np.abs(suv[mask & (depth <= EXACT.pelvis_mm)] - urine) > 1.0)


def test_hot_structures_never_cover_organs_and_land_in_the_extension_first():
    labels, body = _phantom((30, 80, 96))
    labels[:] = 0
    labels[12:20, 20:45, 15:45] = 1
    extension = np.zeros(labels.shape, bool)
    extension[:8] = True
    cfg = replace(EXACT, large_hot=(3, 3), large_hot_radius_mm=(10.0, 12.0), large_hot_suv=(40.0, 50.0),
                  small_hot=(0, 0))
    suv, drawn = render_pet(labels, body, SPACING, np.random.default_rng(5), cfg, extension=extension)
    assert drawn["large_hot"] == 3
    liver = _single_value(suv[labels == 1])
    assert liver < 40.0
    hot = suv >= 40.0
    assert hot.any() and not (hot & (labels > 0)).any()
    lab, n = ndimage.label(hot)
    centres = ndimage.center_of_mass(hot, lab, range(1, n + 1))
    assert n >= 1 and all(c[0] < 10 for c in centres), centres   # centred in the extension slices (z < 8)


def test_heart_lies_above_the_liver_dome_left_of_it_and_outside_the_organs():
    labels, body = _phantom((30, 80, 96))
    labels[:] = 0
    labels[4:14, 20:45, 15:45] = 1        # liver, top slice 13 (axis 0 runs towards the head)
    labels[6:10, 46:62, 58:72] = 13
    cfg = replace(EXACT, heart_probability=1.0, large_hot=(0, 0), small_hot=(0, 0), heart_suv=(40.0, 50.0),
                  heart_offset_mm=(20.0, 20.0), heart_radius_mm=(25.0, 25.0), heart_wall_mm=(8.0, 8.0))
    suv, drawn = render_pet(labels, body, SPACING, np.random.default_rng(2), cfg)
    wall = np.isclose(suv, drawn["heart"]["suv"], atol=1e-3)
    assert wall.any() and not (wall & (labels > 0)).any()
    assert drawn["heart"]["centre"][0] == pytest.approx(13 + 20.0 / SPACING[0])
    zs, _, xs = np.nonzero(wall)
    assert zs.mean() > 13 and xs.mean() > np.argwhere(labels == 1)[:, 2].mean()   # above, towards the left
    # a hollow wall: the centre holds the (cooler) blood pool
    cz, cy, cx = (int(round(c)) for c in drawn["heart"]["centre"])
    assert 0 < suv[cz, cy, cx] < 40.0
    no_liver = labels.copy()
    no_liver[no_liver == 1] = 0
    assert "heart" not in render_pet(no_liver, body, SPACING, np.random.default_rng(2), cfg)[1]


def test_same_seed_same_image_and_bad_input():
    labels, body = _phantom()
    a, _ = render_pet(labels, body, SPACING, np.random.default_rng(11))
    b, _ = render_pet(labels, body, SPACING, np.random.default_rng(11))
    c, _ = render_pet(labels, body, SPACING, np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0
    # the PSF blurs: activity spreads beyond the body, but not far
    far = ndimage.distance_transform_edt(~body, sampling=SPACING) > 30.0
    assert far.any() and float(a[far].max()) < 1e-3
    with pytest.raises(ValueError, match="same 3D shape"):
        render_pet(labels[:5], body, SPACING, np.random.default_rng(0))
    bad = labels.copy()
    bad[0, 0, 0] = 20
    with pytest.raises(ValueError, match=r"\[20\]"):
        render_pet(bad, body, SPACING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="psf_fwhm_mm"):
        PetRenderConfig(psf_fwhm_mm=(9.0, 5.0))


def test_a_render_extends_the_body_and_keeps_the_labels_in_place():
    """render_canonical (what the PET row's renders use, packed.prepare_render): 20-40 mm of slices added below and
    above, no organ there, the labels unchanged between them, the body continued as a copy of the outermost full
    body slice (air stays air); variants of one case differ, the same (seed, name) renders the same."""
    from training.render.pet import painter
    from training.render.variants import render_canonical

    labels, body = _phantom()
    cfg = replace(EXACT, pad_mm=(20.0, 40.0))
    suv, lab, _, (below, above) = render_canonical(labels, body, SPACING, "x_pet0", 3, cfg.pad_mm, painter(cfg))
    assert 4 <= below <= 8 and 4 <= above <= 8   # 20-40 mm at 5 mm slices
    assert suv.shape == lab.shape == (12 + below + above, 80, 96) and suv.dtype == np.float32
    np.testing.assert_array_equal(lab[below:below + 12], labels)
    assert not lab[:below].any() and not lab[below + 12:].any()
    np.testing.assert_array_equal(suv[0] > 0, body[0] | (labels[0] > 0))
    again = render_canonical(labels, body, SPACING, "x_pet0", 3, cfg.pad_mm, painter(cfg))[0]
    other = render_canonical(labels, body, SPACING, "x_pet1", 3, cfg.pad_mm, painter(cfg))[0]
    assert np.array_equal(suv, again) and (suv.shape != other.shape or not np.array_equal(suv, other))


# --- random-contrast renders (training.render.synth) ---------------------------------------------------------

SYNTH_EXACT = SynthRenderConfig(spread=(0.0, 0.0), bias=0.0, gamma_sd=0.0, blur_mm=(0.0, 0.0), noise=(0.0, 0.0))


def test_synth_render_gives_every_tissue_class_one_random_value():
    labels, body = _phantom()
    cfg = replace(SYNTH_EXACT, kidney_core_probability=1.0)
    brighter = []
    for seed in range(12):
        img, means = render_synth(labels, body, SPACING, np.random.default_rng(seed), cfg)
        classes = tissue_classes(labels, body, SPACING, np.random.default_rng(seed), cfg)
        assert img.dtype == np.float32 and img.shape == labels.shape
        assert img.max() == pytest.approx(1.0)   # normalised by the brightest class (gamma off)
        peak = max(means.values())
        for c in np.unique(classes).tolist():   # one value per class: its mean over the brightest mean
            np.testing.assert_allclose(img[classes == c], means[c] / peak, atol=2e-3)
        assert {101, 102, 103, 113, 202, 213} <= set(means)   # organs and the kidneys' inner part
        assert 0 in means and means[0] <= SYNTH_EXACT.air[1]
        brighter.append(means[101] > means[103])
    assert any(brighter) and not all(brighter)   # liver sometimes brighter, sometimes darker than spleen


def test_synth_render_is_seeded_and_checks_its_input():
    labels, body = _phantom()
    a, _ = render_synth(labels, body, SPACING, np.random.default_rng(4))
    b, _ = render_synth(labels, body, SPACING, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="same 3D shape"):
        render_synth(labels[:3], body, SPACING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise"):
        SynthRenderConfig(noise=(0.2, 0.1))


def test_synth_render_ties_a_class_to_its_neighbours_mean_and_leaves_untied_renders_as_they_were():
    labels, body = _phantom()
    ties = ((113, (SOFT_TISSUE, 101)),)     # left kidney -> soft tissue / bowel or the liver
    picked = set()
    for seed in range(10):
        untied, _ = render_synth(labels, body, SPACING, np.random.default_rng(seed))
        off, _ = render_synth(labels, body, SPACING, np.random.default_rng(seed),
                              SynthRenderConfig(ties=ties, tie_probability=0.0))
        np.testing.assert_array_equal(off, untied)   # no tie drawn: the same random stream, the same image
        _, means = render_synth(labels, body, SPACING, np.random.default_rng(seed),
                                replace(SYNTH_EXACT, ties=ties, tie_probability=1.0))
        partner = [n for n in (SOFT_TISSUE, 101) if means[n] == means[113]]
        assert partner, (seed, means)
        picked.update(partner)
    assert picked == {SOFT_TISSUE, 101}         # either neighbour, at random
    with pytest.raises(ValueError, match="neighbours drawn before it"):
        SynthRenderConfig(ties=((101, (113,)),))
    with pytest.raises(ValueError, match="tie_probability"):
        SynthRenderConfig(tie_probability=1.5)
