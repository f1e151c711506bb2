"""The context stage: one organ from the masks of the others (a card's optional `context`).

Some organs have no contrast of their own in most sequences (the duodenum looks like the bowel on CT and like the
pancreas on T1 MRI) but a place fixed by their neighbours: the duodenum wraps the pancreatic head, under the liver
and the stomach, beside the right kidney. A context stage is a 2D network whose input is the fine stage's labels
as one-hot channels (background + `inputs`, the organs it reads) and whose output is its one organ (`adds`). It
never sees the image, so it is the same network on every sequence and modality. It runs on the fine stage's grid
and writes its organ only where the fine labels are one of `replaces` (background by default), so no other organ
loses a voxel.
"""
from __future__ import annotations

import numpy as np

from .sliding_window import sliding_window_labels


def context_channels(labels: np.ndarray, inputs) -> np.ndarray:
    """One-hot channels (float32, (1 + len(inputs),) + labels.shape): channel 0 the voxels of no input organ,
    channel 1 + i the voxels of FLARE label inputs[i]."""
    out = np.zeros((1 + len(inputs),) + labels.shape, dtype=np.float32)
    for i, lab in enumerate(inputs):
        out[1 + i] = labels == lab
    out[0] = out[1:].sum(0) == 0
    return out


def add_organ(labels: np.ndarray, context, predict) -> np.ndarray:
    """`labels` (FLARE labels on the fine grid, z, y, x) with the context stage's organ written where the network
    finds it and the labels are one of `context.replaces` (a new array). `predict`: the stage's Backend.predict."""
    stage = context.stage
    channels = sliding_window_labels(context_channels(labels, context.inputs), stage.patch_size, stage.step_size,
                                     stage.num_classes, predict)
    found = (np.asarray(stage.label_ids, dtype=np.uint8)[channels] == context.adds) & np.isin(labels, context.replaces)
    out = labels.copy()
    out[found] = context.adds
    return out
