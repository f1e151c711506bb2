"""The context stage (inference/context.py, training/inplane/context.py): its input channels, the rule that it
only takes the voxels it may replace, and the training pairs' corruption."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from inference.config import Architecture, StageConfig
from inference.context import add_organ, context_channels
from training.inplane.context import corrupt, reach_mm


def test_context_channels_are_one_hot_with_background_for_every_other_label():
    labels = np.array([[[0, 1, 12, 4]]], dtype=np.uint8)
    ch = context_channels(labels, (1, 4))
    assert ch.shape == (3, 1, 1, 4)
    assert ch[:, 0, 0].T.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]   # 12 is no input: background
    assert (ch.sum(0) == 1).all()


def _stage(channels: int) -> StageConfig:
    """A context stage config for a stand-in `predict` (its network is never built)."""
    arch = Architecture(input_channels=channels, n_stages=1, features_per_stage=(2,), kernel_sizes=((1, 3, 3),),
                        strides=((1, 1, 1),), n_conv_per_stage=(1,), n_conv_per_stage_decoder=())
    return StageConfig(spacing_mm=(None, 2.0, 2.0), patch_size=(1, 4, 4), normalization=None, architecture=arch,
                       label_ids=(0, 12))


def test_add_organ_writes_only_where_the_labels_may_be_replaced():
    stage = _stage(3)
    labels = np.zeros((2, 4, 4), dtype=np.uint8)
    labels[:, :2] = 4                                   # pancreas on the top half

    def predict(x):                                     # "duodenum" on the left half of every patch
        logits = np.zeros((2,) + x.shape[2:], dtype=np.float32)
        logits[1, :, :, :2] = 1.0
        return logits

    out = add_organ(labels, SimpleNamespace(stage=stage, inputs=(4, 11), adds=12, replaces=(0,), near=()), predict)
    assert (out[:, 2:, :2] == 12).all() and (out[:, :2] == 4).all() and (out[:, 2:, 2:] == 0).all()
    out = add_organ(labels, SimpleNamespace(stage=stage, inputs=(4, 11), adds=12, replaces=(0, 4), near=()), predict)
    assert (out[:, :, :2] == 12).all()


def test_corrupt_removes_the_added_organ_and_never_invents_a_label():
    lab = np.zeros((40, 40), dtype=np.uint8)
    lab[10:20, 10:20], lab[20:25, 10:20], lab[5:8, 30:35] = 4, 12, 11
    for seed in range(20):
        out = corrupt(lab, 12, (4, 11), np.random.default_rng(seed))
        assert not (out == 12).any() and set(np.unique(out)) <= {0, 4, 11}
        assert set(np.unique(out[lab == 12])) <= {0, 4, 11}


def test_add_to_model_maps_the_trained_2d_net_onto_the_card_exactly(tmp_path):
    """A context stage saved by train_context (2D net, 13 input channels) + an in-plane model folder -> a card
    whose context backend gives the 2D net's logits."""
    import json
    from dataclasses import asdict

    import torch

    from inference.backends import make_backend
    from inference.model_folder import load_model_folder
    from training.inplane.context import SLACK_MM, ContextRecipe, add_to_model
    from training.inplane.export import card_stage
    from training.inplane.loop import build_net2d
    from training.inplane.recipe import StageRecipe

    from helpers import make_random_model, write_image

    labels = tuple(v for v in range(14) if v != 12)
    stages = {k: card_stage(StageRecipe(spacing_mm=(None, s, s), patch=(32, 32), features=(4, 8)), labels)
              for k, s in (("coarse", 4.0), ("fine", 2.0))}
    model = make_random_model(tmp_path / "m", modalities=("MRI",), **stages)
    recipe = ContextRecipe()
    torch.manual_seed(0)
    net2d = build_net2d(recipe.stage.features, 2, 1 + len(recipe.inputs)).eval()
    trained = tmp_path / "ctx"
    trained.mkdir()
    torch.save(net2d.state_dict(), trained / "final.pt")
    summary = {"recipe": asdict(recipe), "iterations": 1, "trained_s": 0.1, "seconds_per_iteration": 0.1,
               "holdout_dice": 0.0, "torch": torch.__version__, "threads": 1, "trained_on": ["a"], "held_out": ["b"]}
    (trained / "summary.json").write_text(json.dumps(summary))
    out = add_to_model(model, trained, tmp_path / "m_ctx", name="m_ctx")
    folder = load_model_folder(out, verify=True)
    assert folder.card.context.stage.patch_size == (1, 96, 96) and folder.card.context.near == ()
    # with the label maps: around the pancreas, margin = how far the TRAINING maps' duodenum reaches + the slack
    maps = tmp_path / "data" / "flare22_labels" / "labelsTr"
    maps.mkdir(parents=True)
    for name, z_stop in (("a", 14), ("b", 20)):               # b is held out: its farther duodenum must not count
        lab = np.zeros((24, 40, 40), dtype=np.uint8)
        lab[8:12, 10:20, 10:20] = 4
        lab[6:z_stop, 20:23, 10:20] = 12
        write_image(lab, maps / f"{name}.nii.gz", spacing=(2.0, 2.0, 3.0))
    summary["trained_on"], summary["held_out"] = ["a.nii.gz"], ["b.nii.gz"]
    (trained / "summary.json").write_text(json.dumps(summary))
    ctx = load_model_folder(add_to_model(model, trained, tmp_path / "m_near", name="m_near", data=tmp_path / "data"),
                            verify=True).card.context
    assert ctx.near == (4,) and ctx.margin_mm == (2 * 3.0 + SLACK_MM, 3 * 2.0 + SLACK_MM, SLACK_MM)
    x = context_channels(np.random.default_rng(0).integers(0, 14, (1, 96, 96)).astype(np.uint8), recipe.inputs)
    with torch.no_grad():
        ref = net2d(torch.from_numpy(x.transpose(1, 0, 2, 3)))[0].numpy()
    for backend in ("torch", "onnx"):
        got = make_backend(folder, "context", backend, "cpu").predict(x[None])
        assert got.shape == (2, 1, 96, 96) and np.abs(got[:, 0] - ref).max() < 1e-4
    summary["recipe"]["holdout"] = 3
    (trained / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="another recipe"):
        add_to_model(model, trained, tmp_path / "m_ctx2", name="m_ctx2")


def test_learning_curves_are_drawn_for_context_and_image_stages(tmp_path):
    from inference.atomic import write_csv
    from training.inplane.report import plot_curves

    for d in ("context/duodenum", "rows/A/fine"):
        (tmp_path / "w" / d).mkdir(parents=True)
    write_csv(tmp_path / "w" / "context" / "duodenum" / "curve.csv", ["iteration", "seconds", "loss", "holdout_dice"],
              [[250, 160.0, 0.67, 0.2], [500, 320.0, 0.53, 0.27]])
    write_csv(tmp_path / "w" / "rows" / "A" / "fine" / "curve.csv", ["iteration", "seconds", "loss", "dice_1"],
              [[10, 60.0, 1.2, 0.5], [20, 120.0, 0.9, 0.6]])
    written = plot_curves(tmp_path / "w", tmp_path / "png")
    assert sorted(p.name for p in written) == ["curve_context_duodenum.png", "curve_rows_A_fine.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_reach_is_how_far_the_organ_leaves_the_box_of_its_neighbours():
    lab = np.zeros((20, 30, 30), dtype=np.uint8)
    lab[5:10, 10:20, 10:20] = 4
    lab[3:12, 12:24, 15:18] = 12                       # 2 slices below, 2 above; 4 voxels beyond in y; inside in x
    assert reach_mm([lab], [(2.0, 1.5, 1.0)], 12, (4,)) == (4.0, 6.0, 0.0)
    assert reach_mm([lab, np.zeros_like(lab)], [(1.0, 1.0, 1.0)] * 2, 12, (4,)) == (2.0, 4.0, 0.0)


def test_add_organ_runs_only_around_its_near_organs():
    stage = _stage(2)
    labels = np.zeros((6, 20, 20), dtype=np.uint8)
    labels[2:4, 8:10, 8:10] = 4

    def predict(x):                                     # the organ everywhere the stage runs
        logits = np.zeros((2,) + x.shape[2:], dtype=np.float32)
        logits[1] = 1.0
        return logits

    ctx = SimpleNamespace(stage=stage, inputs=(4,), adds=12, replaces=(0,), near=(4,), margin_mm=(3.0, 4.0, 2.0))
    out = add_organ(labels, ctx, predict, spacing_mm=(3.0, 2.0, 2.0))
    expect = np.zeros_like(labels)
    expect[1:5, 6:12, 7:11] = 12                        # the pancreas box + 1 slice, 2 rows, 1 column
    expect[labels == 4] = 4
    assert (out == expect).all()
    no_pancreas = np.where(labels == 4, 11, 0).astype(np.uint8)
    assert (add_organ(no_pancreas, ctx, predict) == no_pancreas).all()       # no pancreas: no guess
