"""The context stage: one organ from the masks of the others (a card's optional `context`).

Some organs have no contrast of their own in most sequences (the duodenum looks like the bowel on CT and like the
pancreas on T1 MRI) but a place fixed by their neighbours: the duodenum wraps the pancreatic head, under the liver
and the stomach, beside the right kidney. A context stage is a 2D network whose input is the fine stage's labels
as one-hot channels (background + `inputs`, the organs it reads) and whose output is its one organ (`adds`). It
never sees the image, so it is the same network on every sequence and modality. It runs on the fine stage's grid
and writes its organ only where the fine labels are one of `replaces` (background by default), so no other organ
loses a voxel. Its card entry is `ContextConfig`; its network input is not normalised (one-hot masks), so its
stage's normalisation scheme is "none".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import roi
from .sliding_window import sliding_window_labels
from .stage_config import ModelCardError, StageConfig


@dataclass(frozen=True)
class ContextConfig:
    """A card's context stage: `stage` (a 2-class network on the fine grid, label_ids (0, adds), input channels
    1 + len(inputs)), the FLARE labels it reads (`inputs`), the one it writes (`adds`) and the labels it may
    overwrite (`replaces`, background only by default). With `near`, the stage runs only on the box of those
    labels grown by `margin_mm` (z, y, x) (where its organ can lie: the duodenum around the pancreas; the stage
    does not run when none of them is found); empty: on the whole fine grid."""

    stage: StageConfig
    inputs: tuple[int, ...]
    adds: int
    replaces: tuple[int, ...] = (0,)
    near: tuple[int, ...] = ()
    margin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        inputs, replaces = tuple(int(v) for v in self.inputs), tuple(int(v) for v in self.replaces)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "replaces", replaces)
        object.__setattr__(self, "adds", int(self.adds))
        object.__setattr__(self, "near", tuple(int(v) for v in self.near))
        object.__setattr__(self, "margin_mm", tuple(float(v) for v in self.margin_mm))
        if not set(self.near) <= set(inputs) or len(self.margin_mm) != 3 or not all(
                math.isfinite(v) and v >= 0 for v in self.margin_mm):
            raise ModelCardError(f"context.near must be input labels and margin_mm three numbers >= 0 (z, y, x mm), "
                                 f"got {self.near} and {self.margin_mm}")
        if not inputs or len(set(inputs)) != len(inputs) or any(not 0 < v < 256 for v in inputs):
            raise ModelCardError(f"context.inputs must be distinct labels in 1..255, got {inputs}")
        if not 0 < self.adds < 256 or self.adds in inputs or self.adds in replaces:
            raise ModelCardError(f"context.adds must be a label in 1..255 that it neither reads nor replaces, got "
                                 f"{self.adds} (inputs {inputs}, replaces {replaces})")
        if not replaces or any(not 0 <= v < 256 for v in replaces):
            raise ModelCardError(f"context.replaces must be labels in 0..255, got {replaces}")
        st = self.stage
        if st.label_ids != (0, self.adds):
            raise ModelCardError(f"context.stage.label_ids must be [0, {self.adds}], got {list(st.label_ids)}")
        if st.architecture.input_channels != 1 + len(inputs):
            raise ModelCardError(f"context.stage reads {st.architecture.input_channels} channels; background + "
                                 f"{len(inputs)} inputs make {1 + len(inputs)}")
        if st.normalization.scheme != "none" or st.min_slice_mm is not None:
            raise ModelCardError("context.stage reads one-hot masks on the fine grid: normalisation scheme 'none' "
                                 "and no min_slice_mm")

    def check_fits(self, fine: StageConfig) -> None:
        """The stage runs on the fine stage's labels: the same spacing, inputs the fine stage predicts, and an organ
        it does not."""
        if self.stage.spacing_mm != fine.spacing_mm:
            raise ModelCardError(f"context.stage.spacing_mm {self.stage.spacing_mm} differs from the fine stage's "
                                 f"{fine.spacing_mm} (it runs on the fine grid)")
        missing = sorted(set(self.inputs) - set(fine.label_ids))
        if missing or self.adds in fine.label_ids:
            raise ModelCardError(f"context: the fine stage (labels {list(fine.label_ids)}) must predict every input "
                                 f"(missing {missing}) and not the added organ {self.adds}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ContextConfig":
        return cls(stage=StageConfig.from_dict(d["stage"]), inputs=tuple(d["inputs"]), adds=d["adds"],
                   replaces=tuple(d.get("replaces", (0,))), near=tuple(d.get("near", ())),
                   margin_mm=tuple(d.get("margin_mm", (0.0, 0.0, 0.0))))


def context_channels(labels: np.ndarray, inputs) -> np.ndarray:
    """One-hot channels (float32, (1 + len(inputs),) + labels.shape): channel 0 the voxels of no input organ,
    channel 1 + i the voxels of FLARE label inputs[i]."""
    out = np.zeros((1 + len(inputs),) + labels.shape, dtype=np.float32)
    for i, lab in enumerate(inputs):
        out[1 + i] = labels == lab
    out[0] = out[1:].sum(0) == 0
    return out


def search_box(labels: np.ndarray, context, spacing_mm) -> roi.Box | None:
    """Where the stage runs on `labels` (fine grid of voxel size `spacing_mm`, z, y, x): the whole grid without
    `context.near`; else the box of those labels grown by `context.margin_mm`, None when none of them is found (the
    organ is placed by them: no guess without them)."""
    if not context.near:
        return roi.Box.whole(labels.shape)
    box = roi.foreground_box(np.isin(labels, context.near))
    return None if box is None else roi.expand_box(box, context.margin_mm, spacing_mm, labels.shape)


def add_organ(labels: np.ndarray, context, predict, spacing_mm=(1.0, 1.0, 1.0)) -> np.ndarray:
    """`labels` (FLARE labels on the fine grid, z, y, x, voxels of `spacing_mm`) with the context stage's organ
    written where the network finds it inside `search_box` and the labels are one of `context.replaces` (a new
    array). `predict`: the stage's Backend.predict."""
    stage = context.stage
    box = search_box(labels, context, spacing_mm)
    if box is None:
        return labels.copy()
    part = labels[box.slices]
    channels = sliding_window_labels(context_channels(part, context.inputs), stage.patch_size, stage.step_size,
                                     stage.num_classes, predict)
    found = (np.asarray(stage.label_ids, dtype=np.uint8)[channels] == context.adds) & np.isin(part, context.replaces)
    out = labels.copy()
    out[box.slices][found] = context.adds
    return out
