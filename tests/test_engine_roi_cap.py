"""The ROI plausibility cap (card roi.max_extent_mm, inference.roi.plausible_organ_box), with analytic answers."""
from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import tiny_stage, write_image
from inference import pipeline, roi
from inference.backends import Backend
from inference.config import ModelCard, ModelCardError, Normalization, RoiConfig
from inference.model_folder import load_model_folder
from inference.io import read_image
from inference.pipeline import CaseRecord, EngineOptions, Segmenter

CAP = (300.0, 300.0, 360.0)


def _block(lab, label, z, y, x):
    lab[slice(*z), slice(*y), slice(*x)] = label


# ---------------------------------------------------------------------------------------------- the pure function

def test_union_within_the_cap_is_the_foreground_box():
    lab = np.zeros((60, 80, 80), np.uint8)
    _block(lab, 1, (10, 30), (10, 40), (10, 40))  # liver
    _block(lab, 2, (20, 35), (30, 45), (50, 60))  # right kidney
    _block(lab, 13, (20, 35), (30, 45), (0, 8))  # left kidney
    box, dropped = roi.plausible_organ_box(lab, (5.0, 2.0, 2.0), CAP)
    assert box == roi.foreground_box(lab) == roi.Box((10, 10, 0), (35, 45, 60))
    assert dropped == []


def test_stray_organ_far_along_z_is_dropped():
    lab = np.zeros((220, 60, 60), np.uint8)  # 5 mm slices: 1.1 m, a head-to-legs PET
    _block(lab, 1, (40, 70), (10, 40), (10, 40))  # liver
    _block(lab, 2, (55, 75), (30, 45), (42, 52))  # right kidney
    _block(lab, 13, (55, 75), (30, 45), (0, 8))  # left kidney
    _block(lab, 3, (190, 196), (20, 26), (20, 26))  # "spleen" 600 mm below the block
    box, dropped = roi.plausible_organ_box(lab, (5.0, 4.0, 4.0), CAP)
    assert dropped == [3]
    assert box == roi.foreground_box(np.where(lab == 3, 0, lab)) == roi.Box((40, 10, 0), (75, 45, 52))


def test_the_kept_subset_has_the_most_voxels_not_the_first_organs():
    lab = np.zeros((200, 40, 40), np.uint8)
    _block(lab, 1, (5, 10), (5, 10), (5, 10))  # a small cluster of low labels at the top...
    _block(lab, 2, (12, 15), (5, 10), (5, 10))
    _block(lab, 5, (120, 150), (5, 30), (5, 30))  # ...and a large one 1 m away
    _block(lab, 11, (140, 170), (10, 35), (10, 35))
    box, dropped = roi.plausible_organ_box(lab, (5.0, 5.0, 5.0), CAP)
    assert dropped == [1, 2]
    assert box == roi.Box((120, 5, 5), (170, 35, 35))


def test_the_window_may_start_at_any_organ_not_only_the_first():
    # z cap 10 voxels: organ 1 alone (z 0-4, 40 voxels) vs organs 4 + 6 (z 8-18, 2 x 30 voxels); the best window
    # starts at organ 4 and cannot also hold organ 1
    lab = np.zeros((30, 10, 10), np.uint8)
    _block(lab, 1, (0, 4), (0, 2), (0, 5))
    _block(lab, 4, (8, 11), (0, 2), (0, 5))
    _block(lab, 6, (15, 18), (5, 7), (0, 5))
    box, dropped = roi.plausible_organ_box(lab, (1.0, 1.0, 1.0), (10.0, 100.0, 100.0))
    assert dropped == [1] and box == roi.Box((8, 0, 0), (18, 7, 5))


def test_equal_voxel_counts_keep_the_lowest_labels():
    lab = np.zeros((100, 10, 10), np.uint8)
    _block(lab, 7, (0, 5), (0, 5), (0, 5))
    _block(lab, 3, (90, 95), (0, 5), (0, 5))
    box, dropped = roi.plausible_organ_box(lab, (5.0, 5.0, 5.0), CAP)
    assert dropped == [7] and box == roi.Box((90, 0, 0), (95, 5, 5))


def test_exhaustive_search_matches_brute_force_over_subsets():
    rng = np.random.default_rng(0)
    spacing, cap_mm = (3.0, 2.0, 2.5), (45.0, 40.0, 50.0)
    cap_vox = (15, 20, 20)
    for _ in range(40):
        lab = np.zeros((50, 50, 50), np.uint8)
        for organ in rng.choice(np.arange(1, 14), size=rng.integers(2, 8), replace=False):
            size = rng.integers(2, 12, size=3)
            at = [rng.integers(0, 50 - s) for s in size]
            _block(lab, int(organ), (at[0], at[0] + size[0]), (at[1], at[1] + size[1]), (at[2], at[2] + size[2]))
        organs = [int(k) for k in np.unique(lab[lab > 0])]
        boxes = {k: roi.foreground_box(lab == k) for k in organs}
        best = 0
        for r in range(1, len(organs) + 1):
            for sub in itertools.combinations(organs, r):
                lo = np.min([boxes[k].start for k in sub], axis=0)
                hi = np.max([boxes[k].stop for k in sub], axis=0)
                if np.all(hi - lo <= cap_vox):
                    best = max(best, int(np.isin(lab, sub).sum()))
        box, dropped = roi.plausible_organ_box(lab, spacing, cap_mm)
        kept = [k for k in organs if k not in dropped]
        if best == 0:  # nothing fits alone: the shrunk largest organ
            assert len(kept) == 1 and all(n <= c for n, c in zip(box.shape, cap_vox, strict=True))
            continue
        assert int(np.isin(lab, kept).sum()) == best
        assert box == roi.foreground_box(np.where(np.isin(lab, kept), lab, 0))
        assert all(n <= c for n, c in zip(box.shape, cap_vox, strict=True))


def test_single_organ_larger_than_the_cap_is_cut_to_the_cap_around_its_centre():
    lab = np.zeros((100, 40, 40), np.uint8)
    _block(lab, 1, (10, 71), (5, 25), (5, 25))  # 61 slices x 5 mm = 305 mm > 100 mm
    _block(lab, 2, (75, 99), (0, 3), (0, 40))  # smaller, also too long (120 mm)
    box, dropped = roi.plausible_organ_box(lab, (5.0, 5.0, 5.0), (100.0, 300.0, 300.0))
    # cap 20 slices; excess 41 -> start 10 + 41 // 2 = 30; y and x fit and stay as they are
    assert box == roi.Box((30, 5, 5), (50, 25, 25)) and box.shape[0] == 20
    assert dropped == [2]


def test_empty_map():
    assert roi.plausible_organ_box(np.zeros((5, 6, 7), np.uint8), (1.0, 1.0, 1.0), CAP) == (None, [])


def test_anisotropic_spacing_converts_mm_to_voxels_by_floor():
    spacing = (2.5, 0.7, 0.7)
    cap_mm = (10.0, 2.1, 3.0)  # floor(4.0) = 4, floor(3.0) = 3 (2.1 / 0.7 is 3.0000000000000004), floor(4.29) = 4
    assert roi._cap_voxels(cap_mm, spacing) == (4, 3, 4)
    assert roi._cap_voxels((0.2, 0.3, 0.4), (1.0, 1.0, 1.0)) == (1, 1, 1)  # at least one voxel
    assert roi._cap_voxels((6.0,) * 3, (0.2, 0.2, 0.2)) == (30, 30, 30)  # 6 / 0.2 = 29.999999999999996
    lab = np.zeros((20, 20, 20), np.uint8)
    _block(lab, 1, (0, 4), (0, 3), (0, 4))  # exactly the cap
    assert roi.plausible_organ_box(lab, spacing, cap_mm) == (roi.Box((0, 0, 0), (4, 3, 4)), [])
    lab[:] = 0
    _block(lab, 1, (0, 5), (0, 4), (0, 5))  # one voxel over on every axis
    box, dropped = roi.plausible_organ_box(lab, spacing, cap_mm)
    assert box == roi.Box((0, 0, 0), (4, 3, 4)) and dropped == []
    with pytest.raises(ValueError):
        roi.plausible_organ_box(lab, spacing, (10.0, 0.0, 3.0))


# ---------------------------------------------------------------------------------------------- the card key

def test_roi_config_parses_and_validates():
    assert RoiConfig.from_dict({}).max_extent_mm is None
    assert RoiConfig.from_dict({"margin_mm": [5, 5, 5]}).max_extent_mm is None
    assert RoiConfig.from_dict({"max_extent_mm": None}).max_extent_mm is None
    cfg = RoiConfig.from_dict({"max_extent_mm": [300, 300.0, 360]})
    assert cfg.max_extent_mm == (300.0, 300.0, 360.0) and all(isinstance(v, float) for v in cfg.max_extent_mm)
    assert RoiConfig(max_extent_mm=[1, 2, 3]).max_extent_mm == (1.0, 2.0, 3.0)
    for bad in ([300, 300], [300, 300, 360, 1], [0, 300, 360], [-1, 300, 360], [300, float("nan"), 360],
                [300, float("inf"), 360], [300, "a", 360], ["300", 300, 360], [True, 300, 360], "300", 300, {}):
        with pytest.raises(ModelCardError, match="max_extent_mm"):
            RoiConfig.from_dict({"max_extent_mm": bad})


def test_card_key_round_trips_and_old_cards_still_load(random_model, tmp_path):
    card = load_model_folder(random_model / "random_c2f").card
    assert card.roi.max_extent_mm is None  # written without a cap
    raw = json.loads(json.dumps(card.to_dict()))
    assert raw["roi"]["max_extent_mm"] is None
    del raw["roi"]["max_extent_mm"]  # a card from before the key
    assert ModelCard.from_dict(raw).roi == card.roi
    raw["roi"]["max_extent_mm"] = [250, 260, 270]
    capped = ModelCard.from_dict(raw)
    assert capped.roi.max_extent_mm == (250.0, 260.0, 270.0)
    assert ModelCard.from_dict(json.loads(json.dumps(capped.to_dict()))) == capped
    raw["roi"]["max_extent_mm"] = [250, 0, 270]
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match=r"model\.json.*max_extent_mm"):
        load_model_folder(folder, verify=False)


def test_c2f_export_cli_passes_the_cap(monkeypatch, tmp_path):
    from training.c2f import cli
    from training.c2f import export as c2f_export

    seen = []
    monkeypatch.setattr(c2f_export, "export_c2f", lambda *a, **kw: seen.append(kw["roi_max_extent_mm"]) or a[0])
    base = ["export", "--work", str(tmp_path), "--out", str(tmp_path / "m")]
    assert cli.main(base) == 0
    assert cli.main(base + ["--roi-max-extent-mm", "250", "260", "270"]) == 0
    assert cli.main(base + ["--no-roi-cap"]) == 0
    assert seen == [c2f_export.DEFAULT_ROI_MAX_EXTENT_MM, (250.0, 260.0, 270.0), None]
    assert c2f_export.DEFAULT_ROI_MAX_EXTENT_MM == (350.0, 350.0, 400.0)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(base + ["--no-roi-cap", "--roi-max-extent-mm", "1", "2", "3"])


# ---------------------------------------------------------------------------------------------- the engine

class ValueBackend(Backend):
    """Organ c where the (unnormalised) intensity is within 1 of 10 * c, background elsewhere (so interpolated
    edges of an organ may read as background: the checks below allow for that)."""

    def _forward(self, x):
        v = x[0, 0]
        out = np.stack([-np.abs(v - 10.0 * c) for c in range(self.stage.num_classes)]).astype(np.float32)
        out[0] = -1.0
        return out


def _model(folder: Path, cap) -> Path:
    import torch

    from inference.network import build_network
    from training.export import export_model

    none = Normalization("none")
    stages = {}
    for name, cfg in (("coarse", tiny_stage((6.0, 6.0, 6.0), (16, 32, 32))),
                      ("fine", tiny_stage((3.0, 2.0, 2.0), (16, 32, 32)))):
        cfg = replace(cfg, normalization=none)
        torch.manual_seed(0)
        stages[name] = (build_network(cfg.architecture, cfg.num_classes), cfg)
    export_model(folder, name=folder.name, description="ROI cap test model (networks replaced by a stub)",
                 modalities=("MRI", "PET"), stages=stages, onnx=False,
                 roi=RoiConfig(margin_mm=(10.0, 10.0, 10.0), max_extent_mm=cap))
    return folder.parent


@pytest.fixture
def value_engine(monkeypatch):
    def make(folder, name, backend, device, threads=None):
        return ValueBackend(folder.card.stage(name), device)

    monkeypatch.setattr(pipeline, "make_backend", make)


def _whole_body(shape=(100, 24, 24)) -> np.ndarray:
    arr = np.zeros(shape, np.float32)
    _block(arr, 10.0, (5, 25), (4, 16), (4, 16))  # liver (1)
    _block(arr, 20.0, (10, 18), (4, 10), (18, 22))  # right kidney (2)
    _block(arr, 30.0, (85, 90), (8, 14), (8, 14))  # a spurious "spleen" (3) 360 mm below
    return arr


def _segment(weights: Path, path: Path) -> tuple[np.ndarray, CaseRecord]:
    rec = CaseRecord(case="wb")
    seg = Segmenter(EngineOptions(weights_dir=weights, device="cpu", backend="torch", tta=False))
    labels = seg.segment(read_image(path), "MRI", rec)
    return labels, rec


def test_engine_caps_the_roi_and_records_it(tmp_path, value_engine):
    arr = _whole_body()
    img = write_image(arr, tmp_path / "wb_0000.nii.gz", spacing=(6.0, 6.0, 6.0))  # the coarse grid is the input's
    capped_w = _model(tmp_path / "w_cap" / "m", CAP)
    loose_w = _model(tmp_path / "w_loose" / "m", (1000.0, 1000.0, 1000.0))
    free_w = _model(tmp_path / "w_free" / "m", None)

    lab, rec = _segment(capped_w, tmp_path / "wb_0000.nii.gz")
    assert rec.roi_capped and rec.roi_dropped_organs == [3]
    assert any("ROI capped" in n and "[3]" in n for n in rec.notes)
    # liver + kidney: z 5-25, y 4-16, x 4-22; + 10 mm = 2 voxels of 6 mm each side, clipped to the image
    assert rec.roi_box_zyx == {"start": [3, 2, 2], "stop": [27, 18, 24]}
    assert not rec.roi_fallback_whole_image
    assert lab.shape == arr.shape and lab.dtype == np.uint8
    outside = np.ones(arr.shape, bool)
    outside[3:27, 2:18, 2:24] = False
    assert not lab[outside].any() and not (lab == 3).any()
    assert (lab[arr == 10.0] == 1).mean() > 0.8 and (lab[arr == 20.0] == 2).mean() > 0.8

    for weights in (loose_w, free_w):  # a cap the organs fit in, and no cap: every organ decides the ROI
        lab, rec = _segment(weights, tmp_path / "wb_0000.nii.gz")
        assert not rec.roi_capped and rec.roi_dropped_organs == [] and not any("ROI capped" in n for n in rec.notes)
        assert rec.roi_box_zyx == {"start": [3, 2, 2], "stop": [92, 18, 24]}
        assert (lab[arr == 30.0] == 3).mean() > 0.75

    # the CLI writes the record (QC JSON) with the new fields, and the output overlays the input
    from inference.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "wb_0000.nii.gz").rename(tmp_path / "in" / "wb_0000.nii.gz")
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(capped_w), "--device", "cpu",
                 "--backend", "torch"]) == 0
    qc = json.loads((tmp_path / "out_qc" / "wb.json").read_text())
    assert qc["roi_capped"] is True and qc["roi_dropped_organs"] == [3]
    seg = sitk.ReadImage(str(tmp_path / "out" / "wb.nii.gz"))
    assert seg.GetSize() == img.GetSize() and np.allclose(seg.GetSpacing(), img.GetSpacing())
    assert np.allclose(seg.GetOrigin(), img.GetOrigin()) and np.allclose(seg.GetDirection(), img.GetDirection())


def test_engine_uses_the_true_coarse_voxel_size(tmp_path, value_engine, monkeypatch):
    """shape_at_spacing rounds: 100 slices of 5 mm become 83 coarse slices of 500/83 = 6.024 mm, not 6 mm."""
    seen = []
    real = roi.plausible_organ_box

    def spy(labels, spacing_mm, max_extent_mm):
        seen.append((labels.shape, tuple(spacing_mm), tuple(max_extent_mm)))
        return real(labels, spacing_mm, max_extent_mm)

    monkeypatch.setattr(roi, "plausible_organ_box", spy)
    arr = _whole_body((100, 24, 24))
    # ITK order x, y, z: 6 mm in plane, 5 mm slices
    write_image(arr, tmp_path / "wb_0000.nii.gz", spacing=(6.0, 6.0, 5.0))
    lab, rec = _segment(_model(tmp_path / "w" / "m", CAP), tmp_path / "wb_0000.nii.gz")
    (shape, spacing, cap), = seen
    assert shape == (83, 24, 24) == tuple(rec.coarse_shape_zyx)
    assert spacing == pytest.approx((500.0 / 83, 6.0, 6.0)) and cap == CAP
    assert rec.roi_capped and rec.roi_dropped_organs == [3]
    assert not (lab == 3).any() and (lab[arr == 10.0] == 1).mean() > 0.8
    stop_z = rec.roi_box_zyx["stop"][0]
    assert 25 <= stop_z < 85  # the ROI holds the liver (slices 5-25) and stops well before the stray organ
