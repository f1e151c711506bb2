"""The context stage (inference/context.py, training/inplane/context.py): its input channels, the rule that it
only takes the voxels it may replace, and the training pairs' corruption."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from inference.config import Architecture, StageConfig
from inference.context import add_organ, context_channels
from training.inplane.context import corrupt


def test_context_channels_are_one_hot_with_background_for_every_other_label():
    labels = np.array([[[0, 1, 12, 4]]], dtype=np.uint8)
    ch = context_channels(labels, (1, 4))
    assert ch.shape == (3, 1, 1, 4)
    assert ch[:, 0, 0].T.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]]   # 12 is no input: background
    assert (ch.sum(0) == 1).all()


def test_add_organ_writes_only_where_the_labels_may_be_replaced():
    arch = Architecture(input_channels=3, n_stages=1, features_per_stage=(2,), kernel_sizes=((1, 3, 3),),
                        strides=((1, 1, 1),), n_conv_per_stage=(1,), n_conv_per_stage_decoder=())
    stage = StageConfig(spacing_mm=(None, 2.0, 2.0), patch_size=(1, 4, 4), normalization=None, architecture=arch,
                        label_ids=(0, 12))
    labels = np.zeros((2, 4, 4), dtype=np.uint8)
    labels[:, :2] = 4                                   # pancreas on the top half

    def predict(x):                                     # "duodenum" on the left half of every patch
        logits = np.zeros((2,) + x.shape[2:], dtype=np.float32)
        logits[1, :, :, :2] = 1.0
        return logits

    out = add_organ(labels, SimpleNamespace(stage=stage, inputs=(4, 11), adds=12, replaces=(0,)), predict)
    assert (out[:, 2:, :2] == 12).all() and (out[:, :2] == 4).all() and (out[:, 2:, 2:] == 0).all()
    out = add_organ(labels, SimpleNamespace(stage=stage, inputs=(4, 11), adds=12, replaces=(0, 4)), predict)
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
    from training.inplane.context import ContextRecipe, add_to_model
    from training.inplane.export import card_stage
    from training.inplane.loop import build_net2d
    from training.inplane.recipe import StageRecipe

    from helpers import make_random_model

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
    assert folder.card.context.stage.patch_size == (1, 96, 96)
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
