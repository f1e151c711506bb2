"""The context stage (inference/context.py, training/inplane/context.py): its input channels, the rule that it
only takes the voxels it may replace, and the training pairs' corruption."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

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
