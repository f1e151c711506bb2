"""The 13th organ: images synthesised from label maps, partial labels (a background that may hide an organ its
source never annotates) and a network head that grows by one organ."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from training.inplane import labelmaps
from training.inplane.data import IGNORE, PARTIAL, SliceBank, organ_box, prepare_volume, relabel
from training.inplane.loop import build_net2d, dice_ce_loss, remap_head, train_stage
from training.inplane.recipe import Appearance, Spatial, StageRecipe, load_profile

from helpers import REAL

FLARE = (0,) + tuple(range(1, 14))


def _label_map(shape=(6, 60, 70)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[1:5, 20:35, 10:30] = 1     # liver
    lab[1:5, 30:40, 45:55] = 3     # spleen
    lab[2:4, 38:44, 30:38] = 12    # duodenum
    return lab


def _write(path, lab, spacing=(0.8, 0.8, 2.5)):
    img = sitk.GetImageFromArray(lab)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def test_marginal_loss_counts_background_or_the_hidden_organ():
    # one pixel, three channels (background, liver, duodenum); the duodenum is the organ the source never marks
    target = torch.full((1, 1, 1), PARTIAL, dtype=torch.long)
    logits = torch.tensor([0.0, -30.0, 0.0]).view(1, 3, 1, 1)
    # p(bg) = p(duodenum) = 1/2, so "background or duodenum" has probability 1: no cross-entropy; the liver's
    # Dice term is 1 (neither predicted nor present, smoothing), the duodenum's is left out of the Dice (1 too)
    assert float(dice_ce_loss(logits, target, (2,))) == pytest.approx(0.0, abs=1e-4)
    # the same pixel as plain background costs -log(1/2) in the cross-entropy
    plain = dice_ce_loss(logits, torch.zeros_like(target), ())
    ce = F.cross_entropy(logits, torch.zeros_like(target))
    assert float(ce) == pytest.approx(math.log(2), abs=1e-4) and float(plain) >= float(ce)
    # no PARTIAL pixel: the loss is the plain one, whatever partial_channels says
    t = torch.zeros(2, 6, 6, dtype=torch.long)
    t[:, 1:3, 1:4] = 1
    lg = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(dice_ce_loss(lg, t, (2,)), dice_ce_loss(lg, t, ()))
    with pytest.raises(ValueError, match="partial_channels"):
        dice_ce_loss(logits, target, ())


def test_remapped_head_keeps_every_organ_and_adds_the_new_one_below_background():
    old_ids, new_ids = (0, 1, 13), (0, 1, 12, 13)
    net = build_net2d((4, 8), len(old_ids))
    state = remap_head(net.state_dict(), old_ids, new_ids)
    grown = build_net2d((4, 8), len(new_ids))
    grown.load_state_dict(state)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        a, b = net.eval()(x), grown.eval()(x)
    assert torch.allclose(b[:, [0, 1, 3]], a, atol=1e-6)     # labels 0, 1, 13 where they were
    bias = [v for k, v in net.state_dict().items() if k.startswith("decoder.seg_layers")][-1][0] - 4.0
    assert torch.allclose(b[:, 2], bias.expand_as(b[:, 2]), atol=1e-6)   # duodenum: a constant, below background
    with pytest.raises(ValueError, match="output channels"):
        remap_head(grown.state_dict(), old_ids, new_ids)


def test_synthetic_volume_holds_the_map_with_air_darkest_and_is_reproducible(tmp_path):
    lab = _label_map()
    _write(tmp_path / "m_0001.nii.gz", lab)
    a = labelmaps.synth_volume(labelmaps.map_volume(tmp_path / "m_0001.nii.gz", (None, 2.0, 2.0)), (None, 2.0, 2.0), FLARE, 0, seed=0)
    b = labelmaps.synth_volume(labelmaps.map_volume(tmp_path / "m_0001.nii.gz", (None, 2.0, 2.0)), (None, 2.0, 2.0), FLARE, 0, seed=0)
    c = labelmaps.synth_volume(labelmaps.map_volume(tmp_path / "m_0001.nii.gz", (None, 2.0, 2.0)), (None, 2.0, 2.0), FLARE, 1, seed=0)
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    assert a.image.shape == (6, 24, 28) and a.spacing_mm == (2.5, 2.0, 2.0)
    assert set(np.unique(a.labels)) == {0, 1, 3, 12}     # channels of FLARE: the label ids themselves
    body = labelmaps.body_ellipse(a.labels, a.spacing_mm, np.random.default_rng(0))
    assert body[a.labels > 0].all()
    rng = np.random.default_rng(3)
    img = labelmaps.synth_image(a.labels, a.spacing_mm, rng)
    inside = labelmaps.body_ellipse(a.labels, a.spacing_mm, np.random.default_rng(3))
    if (~inside).any():   # air (outside the body) is darker than the body on average
        assert img[~inside].mean() < img[inside].mean()


def test_a_bad_label_map_names_its_file(tmp_path):
    lab = _label_map().astype(np.uint16)
    lab[0, 0, 0] = 40
    _write(tmp_path / "bad.nii.gz", lab)
    with pytest.raises(ValueError, match="bad.nii.gz"):
        labelmaps.synth_volume(labelmaps.map_volume(tmp_path / "bad.nii.gz", (None, 2.0, 2.0)), (None, 2.0, 2.0), FLARE, 0, seed=0)
    with pytest.raises(FileNotFoundError, match="no label maps"):
        labelmaps.label_map_files(tmp_path / "empty")


def test_relabelling_a_prepared_volume_equals_preparing_it_with_the_other_labels():
    """The pack holds each volume with its source's channels; a row of other channels relabels it on loading
    (data.relabel), and gets what preparing the scan for those channels gives (an organ the row lacks becomes
    background; partial: the background becomes PARTIAL), regions and organ box included."""
    rng = np.random.default_rng(1)
    arr = rng.random((3, 20, 20)).astype(np.float32) * (np.arange(20) > 3)[None, None, :]   # air on the left
    lab = np.zeros((3, 20, 20), np.uint8)
    lab[:, 5:10, 5:10], lab[:, 12:15, 12:16], lab[1, 0, 19] = 1, 3, IGNORE
    packed = prepare_volume("v", arr, (5.0, 2.0, 2.0), lab, (None, 2.0, 2.0), (0, 1, 3))
    for ids, partial in (((0, 1, 3), False), (FLARE, True), ((0, 1), False), ((0, 3, 1), True)):
        want = prepare_volume("v", arr, (5.0, 2.0, 2.0), lab, (None, 2.0, 2.0), ids, partial=partial)
        got = relabel(packed, ids, partial)
        assert got.label_ids == want.label_ids and got.organ_box == want.organ_box
        assert np.array_equal(got.labels, want.labels) and np.array_equal(got.regions, want.regions), (ids, partial)
    assert relabel(packed, (0, 1, 3)) is packed


def test_partial_background_is_no_organ_anywhere():
    arr = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    lab = np.zeros((3, 20, 20), np.uint8)
    lab[:, 5:10, 5:10] = 1
    vol = prepare_volume("p", arr, (5.0, 2.0, 2.0), lab, (None, 2.0, 2.0), (0, 1, 12), partial=True)
    assert set(np.unique(vol.labels)) == {1, PARTIAL}
    assert organ_box(vol.labels) == ((5, 10), (5, 10))
    assert set(SliceBank([vol]).by_class) == {1}
    assert PARTIAL not in np.unique(vol.regions)


def test_a_stage_trains_on_partial_and_synthetic_volumes_from_smaller_weights(tmp_path):
    lab = _label_map()
    _write(tmp_path / "m.nii.gz", lab)
    synth = labelmaps.synth_volume(labelmaps.map_volume(tmp_path / "m.nii.gz", (None, 2.0, 2.0)), (None, 2.0, 2.0), FLARE, 0, seed=0)
    arr = np.random.default_rng(0).random(lab.shape).astype(np.float32)
    source = prepare_volume("ct", arr, (2.5, 0.8, 0.8), np.where(lab == 12, 0, lab), (None, 2.0, 2.0), FLARE,
                            partial=True)
    recipe = StageRecipe(spacing_mm=(None, 2.0, 2.0), patch=(16, 16), features=(4, 8), batch=2, iterations=3)
    small = (0, 1, 3)
    init = tmp_path / "init.pt"
    torch.save(build_net2d((4, 8), len(small)).state_dict(), init)
    train_stage(tmp_path / "stage", SliceBank([source, synth]), recipe, Spatial(), Appearance(strong=True), FLARE,
                progress=False, init=init, init_label_ids=small, partial_channels=(12,))
    assert (tmp_path / "stage" / "final.pt").is_file()


def test_label_map_rows_record_their_options_and_older_rows_keep_their_fingerprints():
    prof = load_profile("cpu")
    assert "label_maps" not in prof.stage_settings("RA", "fine")["row"]
    row = prof.stage_settings("RAd", "fine")["row"]
    assert row["label_maps"] == "flare22" and row["start"] == "RA" and "label_map_ties" not in row
    assert prof.stage_settings("RAdt", "fine")["row"]["label_map_ties"] == 0.5


def test_the_duodenum_tie_paints_it_as_bowel_pancreas_or_stomach_and_is_off_by_default(tmp_path, monkeypatch):
    (duodenum, partners), = labelmaps.DUODENUM_TIES
    assert duodenum == 112 and partners == (5, 104, 111)   # painter classes: 100 + FLARE label; 5 bowel
    lab = _label_map()
    _write(tmp_path / "m.nii.gz", lab)
    vol = labelmaps.map_volume(tmp_path / "m.nii.gz", (None, 2.0, 2.0))
    plain = labelmaps.synth_volume(vol, (None, 2.0, 2.0), FLARE, 0, seed=0)
    assert np.array_equal(labelmaps.synth_volume(vol, (None, 2.0, 2.0), FLARE, 0, seed=0, tie_probability=0.0).image,
                          plain.image)   # RAd's volumes as published
    import training.render.synth as synth

    configs = []
    monkeypatch.setattr(synth, "render_synth", lambda lab, body, sp, rng, config: (configs.append(config) or
                                                                                   (np.zeros(lab.shape), {})))
    tied = labelmaps.synth_volume(vol, (None, 2.0, 2.0), FLARE, 0, seed=0, tie_probability=0.5)
    assert configs[0].ties == labelmaps.DUODENUM_TIES and configs[0].tie_probability == 0.5
    assert np.array_equal(tied.labels, plain.labels)


@pytest.mark.skipif(not (REAL / labelmaps.FLARE22_MAPS).is_dir(), reason="real FLARE22 label maps not present")
def test_the_flare22_maps_give_all_13_organs_on_the_engine_orientation():
    files = labelmaps.label_map_files(REAL)
    assert len(files) == 50
    vol = labelmaps.synth_volume(labelmaps.map_volume(files[0], (None, 2.0, 2.0)), (None, 2.0, 2.0), FLARE, 0, seed=0)
    assert set(np.unique(vol.labels)) == set(range(14))
    # canonical orientation as the BTCV scans: the liver on the low-x side, the spleen on the high-x side
    xs = {lab: np.nonzero(vol.labels == lab)[2].mean() for lab in (1, 3)}
    assert xs[1] < xs[3]
