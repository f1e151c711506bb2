"""Labelled volumes -> in-memory slices on a stage's grid, prepared with the engine's own functions.

Each case is read (inference.io), put in the engine's canonical orientation, resampled in-plane to the stage
spacing (the engine's linear resampling; labels by its nearest-neighbour rule; z untouched, as the in-plane stage
runs on the scan's own slices) and scaled to [0, 1] between the engine normalisation's percentiles of the whole
image. Beside each image: the label map as network channels, a region map for the appearance randomisation
(channel of the organ; body outside the organs; air), and the in-plane box of all organs (the ROI the engine cuts
around them). A few hundred MB for the 30 BTCV scans at 2 mm.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from inference import normalization, orientation, resample
from inference.config import Normalization

from .protocol import Case
from .recipe import Appearance

NORMALIZATION = Normalization(scheme="zscore", percentiles=(0.5, 99.5))
IGNORE = 255   # label value left out of the loss (pseudo-labels: voxels the teachers do not agree on)
# label value of a voxel that is no annotated organ of its source but may be one the source never annotates (BTCV's
# background may be duodenum): the loss counts it as background or any of those organs (loop.dice_ce_loss)
PARTIAL = 254
NO_ORGAN = (0, IGNORE, PARTIAL)   # label values that are no organ channel


@dataclass
class Volume:
    """One case on a stage's grid: image in [0, 1] (float16), channel labels, regions (uint8), z, y, x."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    regions: np.ndarray
    spacing_mm: tuple[float, float, float]
    organ_box: tuple[tuple[int, int], tuple[int, int]] | None  # in-plane (y0, y1), (x0, x1) of all organs, or None
    label_ids: tuple[int, ...]
    window: tuple[float, float] | None = None   # the scan's intensities at image 0 and 1 (None: unknown)

    def raw(self) -> np.ndarray:
        """The scan's intensities back from the image (float32; clipped where the normalisation clipped)."""
        if self.window is None:
            raise ValueError(f"{self.name}: the intensity window of this volume is unknown")
        low, high = self.window
        return low + self.image.astype(np.float32) * (high - low)


def body_mask(image01: np.ndarray) -> np.ndarray:
    """The body on each slice: brighter than the darkest 2 % of the window, holes filled, largest piece."""
    from scipy import ndimage

    out = np.zeros(image01.shape, dtype=bool)
    for z in range(image01.shape[0]):
        m = ndimage.binary_fill_holes(image01[z] > 0.02)
        lab, n = ndimage.label(m)
        if n:
            sizes = np.bincount(lab.ravel())[1:]
            out[z] = lab == (int(np.argmax(sizes)) + 1)
    return out


def load_volume(case: Case, spacing_mm, label_ids: tuple[int, ...]) -> Volume:
    """`case` read as the engine reads it (SimpleITK: only here, where the pack is made), on the grid of
    `spacing_mm` (z None: the scan's own slices), prepared as the engine prepares it."""
    from inference.io import read_image, read_label_map

    loaded = read_image(case.image)
    orient = orientation.orientation_from_direction(loaded.image.GetDirection())
    spacing = orient.spacing(tuple(reversed(loaded.image.GetSpacing())))
    # copies: loaded.array may be a view into the SimpleITK image, freed with `loaded`
    arr = np.array(orient.apply(loaded.array))
    lab = np.array(orient.apply(read_label_map(case.label, reference=loaded.image)[1]))
    return prepare_volume(case.name, arr, spacing, lab, spacing_mm, label_ids)


def prepare_volume(name: str, arr: np.ndarray, spacing, lab: np.ndarray, spacing_mm,
                   label_ids: tuple[int, ...], partial: bool = False) -> Volume:
    """A scan and its label map (label ids; IGNORE kept), both in canonical order with the scan's canonical
    (z, y, x) spacing, on the grid of `spacing_mm`: resampled in-plane with the engine's functions and scaled to
    [0, 1] between the engine normalisation's percentiles of the whole scan. `partial`: the label map's source
    does not annotate every organ of `label_ids`, so its background is PARTIAL (background or an unannotated
    organ)."""
    params = normalization.resolve(NORMALIZATION, normalization.stats_sample(arr))
    low, width = float(params.low), max(float(params.high - params.low), 1e-6)
    shape = resample.shape_at_spacing(arr.shape, spacing, spacing_mm)
    img = resample.resample_linear(arr, shape)
    img = (np.clip(img, params.low, params.high) - low) / width
    labels = to_channels(resample.labels_to_shape(lab.astype(np.uint8), shape), label_ids, partial)
    regions = labels.copy()
    regions[np.isin(regions, NO_ORGAN)] = 0
    regions[(regions == 0) & body_mask(img)] = len(label_ids)  # body outside the organs (and ignored); 0: air
    out_spacing = tuple(s if t is None else t * 1.0 for s, t in zip(spacing, spacing_mm, strict=True))
    return Volume(name, img.astype(np.float16), labels, regions, out_spacing, organ_box(labels),
                  tuple(label_ids), (low, low + width))


def to_channels(lab: np.ndarray, label_ids: tuple[int, ...], partial: bool = False) -> np.ndarray:
    """A label map (label ids) as channels of `label_ids`: an id not among them becomes background, IGNORE stays;
    `partial`: the background becomes PARTIAL."""
    lut = np.zeros(256, dtype=np.uint8)
    for ch, lid in enumerate(label_ids):
        lut[lid] = ch
    lut[IGNORE] = IGNORE
    labels = lut[lab]
    if partial:
        labels[labels == 0] = PARTIAL
    return labels


def label_map(vol: Volume) -> np.ndarray:
    """The volume's labels as label ids (IGNORE and PARTIAL kept): the inverse of the channel mapping."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(vol.label_ids)] = vol.label_ids
    lut[IGNORE] = IGNORE
    lut[PARTIAL] = PARTIAL
    return lut[vol.labels]


def relabel(vol: Volume, label_ids: tuple[int, ...], partial: bool = False) -> Volume:
    """`vol` with its labels as channels of `label_ids` (an organ not among them becomes background; `partial`:
    the background becomes PARTIAL), its regions and organ box to match: what `prepare_volume` gives for them."""
    if tuple(label_ids) == vol.label_ids and not partial:
        return vol
    labels = to_channels(label_map(vol), label_ids, partial)
    regions = np.where(vol.regions == 0, 0, len(label_ids)).astype(np.uint8)   # air stays air, the rest body
    organs = ~np.isin(labels, NO_ORGAN)
    regions[organs] = labels[organs]
    return replace(vol, labels=labels, regions=regions, label_ids=tuple(label_ids), organ_box=organ_box(labels))


def organ_box(labels: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The in-plane box (y0, y1), (x0, x1) of every organ voxel of a label volume (IGNORE, PARTIAL: no organ),
    or None when there is none."""
    organs = ~np.isin(labels, NO_ORGAN)
    if not organs.any():
        return None
    _, ys, xs = np.nonzero(organs)
    return (int(ys.min()), int(ys.max()) + 1), (int(xs.min()), int(xs.max()) + 1)


class SliceBank:
    """Every slice of every volume, for sampling training patches: slices that hold an organ are indexed per
    organ channel, so a patch can be centred on a rare organ as often as on the liver. `appearance`: the appearance
    policy of this bank's patches (None: the stage's)."""

    def __init__(self, volumes: list[Volume], appearance: Appearance | None = None):
        if not volumes:
            raise ValueError("no training volumes")
        self.volumes = volumes
        self.appearance = appearance
        self.num_classes = len(volumes[0].label_ids)
        self.slices = [(v, z) for v, vol in enumerate(volumes) for z in range(vol.image.shape[0])]
        self.by_class: dict[int, list[int]] = {}
        for i, (v, z) in enumerate(self.slices):
            for ch in np.unique(volumes[v].labels[z]):
                if ch not in NO_ORGAN:
                    self.by_class.setdefault(int(ch), []).append(i)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.volumes]

    def pick(self, rng: np.random.Generator, foreground: bool) -> tuple[Volume, int, tuple[float, float],
                                                                        Appearance | None]:
        """A slice, a patch centre (y, x in pixels): on a random voxel of a random organ, or anywhere in the body
        (the image centre when a slice has no body), and the bank's appearance policy (None: the stage's)."""
        if foreground and self.by_class:
            ch = list(self.by_class)[rng.integers(len(self.by_class))]
            v, z = self.slices[self.by_class[ch][rng.integers(len(self.by_class[ch]))]]
            vol = self.volumes[v]
            ys, xs = np.nonzero(vol.labels[z] == ch)
        else:
            v, z = self.slices[rng.integers(len(self.slices))]
            vol = self.volumes[v]
            ys, xs = np.nonzero(vol.regions[z])
        if len(ys) == 0:
            return vol, z, ((vol.image.shape[1] - 1) / 2, (vol.image.shape[2] - 1) / 2), self.appearance
        k = rng.integers(len(ys))
        return vol, z, (float(ys[k]), float(xs[k])), self.appearance


class MixedBank:
    """Two banks sampled in a fixed proportion: a patch comes from `second` with probability `p_second` (e.g. the
    pseudo-labelled target scans beside the labelled source), whatever their sizes."""

    def __init__(self, first: SliceBank, second: SliceBank, p_second: float):
        if first.num_classes != second.num_classes or not 0 <= p_second <= 1:
            raise ValueError("mixed banks need the same label channels and 0 <= p_second <= 1")
        self.first, self.second, self.p_second = first, second, p_second
        self.num_classes = first.num_classes
        self.names = first.names + second.names

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def pick(self, rng: np.random.Generator, foreground: bool):
        return (self.second if rng.random() < self.p_second else self.first).pick(rng, foreground)
