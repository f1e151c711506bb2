"""The data path, top-down: one image in, one uint8 label map with the input's geometry out.

read -> canonical orientation -> modality -> intensity statistics -> COARSE (fixed spacing, whole image)
-> ROI (union of organ boxes, optionally capped to a plausible extent, + margin; whole image when nothing is
found) -> FINE (ROI at the fine spacing, sliding window, mirror TTA) -> argmax -> [CONTEXT: one more organ from
the fine organs' masks, where the card has a context stage] -> per-organ largest component on
the ROI -> PET label scheme -> nearest-neighbour labels (or, where the card says so, linearly resampled
probabilities) back to the ROI of the input grid (uncrop + undo orientation by writing through a view) -> write.
`Segmenter.segment_array` runs the same path on an array already on the canonical grid (no file, no SimpleITK):
SimpleITK is imported only by the functions that read or return SimpleITK images.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import context, normalization, orientation, postprocess, resample, roi
from .backends import Backend, BackendError, available_backend, cuda_available, make_backend
from .config import StageConfig
from .model_folder import ModelFolder, select_model
from .modality import modality_of
from .sliding_window import sliding_window_labels, sliding_window_probabilities

if TYPE_CHECKING:  # only for annotations: the array path must import without SimpleITK
    import SimpleITK as sitk

    from .io import LoadedImage


@dataclass(frozen=True)
class EngineOptions:
    weights_dir: Path
    device: str = "auto"  # auto | cpu | cuda
    backend: str = "auto"  # auto | torch | onnx
    model: str | None = None  # a model folder name under weights_dir; default: first serving the modality
    threads: int | None = None  # CPU threads for the backend (None: library default)
    verify_weights: bool = True
    tta: bool = True  # False: a single pass per window, whatever the card's TTA says


@dataclass
class CaseRecord:
    """Per-case QC: what ran, where, how long, and what came out."""

    case: str = ""
    modality: str = ""
    model: str = ""
    backend: str = ""
    device: str = ""
    input_size_xyz: tuple[int, ...] = ()
    input_spacing_xyz: tuple[float, ...] = ()
    orientation: str = ""
    notes: list[str] = field(default_factory=list)
    roi_box_zyx: dict = field(default_factory=dict)  # canonical voxel box [start, stop) or whole image
    roi_fallback_whole_image: bool = False
    roi_capped: bool = False  # card.roi.max_extent_mm cut the organ union down (see roi.plausible_organ_box)
    roi_dropped_organs: list[int] = field(default_factory=list)  # coarse organs (MRI numbering) left out
    roi_regrow_rounds: int = 0  # fine-stage reruns on a grown ROI (card.roi.regrow_mm)
    coarse_shape_zyx: tuple[int, ...] = ()
    fine_shape_zyx: tuple[int, ...] = ()
    normalization: dict = field(default_factory=dict)
    organ_volumes_ml: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


IDENTITY = orientation.Orientation(axes_order=(0, 1, 2), flip_axes=(), oblique_deg=0.0)


@dataclass(frozen=True)
class CaseContext:
    """One image on the engine's canonical grid: what every stage of a case reads."""

    modality: str
    orient: orientation.Orientation        # input voxel order -> canonical
    canon: np.ndarray                      # the image in canonical voxel order (a view where possible)
    spacing: tuple[float, float, float]    # canonical (z, y, x) mm
    sample: np.ndarray                     # the whole image's intensity statistics sample
    out_shape: tuple[int, ...]             # the output label map's shape: the input array's (its voxel order)

    @classmethod
    def of(cls, loaded: "LoadedImage", modality: str) -> "CaseContext":
        image = loaded.image
        return cls.of_array(loaded.array, tuple(reversed(image.GetSpacing())), modality,
                            orientation.orientation_from_direction(image.GetDirection()))

    @classmethod
    def of_array(cls, array: np.ndarray, spacing_zyx: tuple[float, float, float], modality: str,
                 orient: orientation.Orientation = IDENTITY) -> "CaseContext":
        """`array` (z, y, x) in its own voxel order with that order's spacing in mm; `orient` brings it to the
        canonical order (identity: `array` is already canonical)."""
        return cls(modality, orient, orient.apply(array), orient.spacing(spacing_zyx),
                   normalization.stats_sample(array), tuple(array.shape))


class Segmenter:
    """Holds the loaded networks (one process, weights loaded once) and segments images."""

    def __init__(self, options: EngineOptions):
        self.options = options
        self._models: dict[str, tuple[ModelFolder, dict[str, Backend], str, str]] = {}

    def _model_for(self, modality: str) -> tuple[ModelFolder, dict[str, Backend], str, str]:
        if modality not in self._models:
            opts = self.options
            folder = select_model(opts.weights_dir, modality, opts.model, verify=opts.verify_weights)
            backend = available_backend(folder) if opts.backend == "auto" else opts.backend
            device = opts.device
            if device == "auto":
                device = "cuda" if cuda_available(backend) else "cpu"
            def build(dev: str) -> dict[str, Backend]:
                return {name: make_backend(folder, name, backend, dev, opts.threads)
                        for name in folder.card.stage_names}

            try:
                stages = build(device)
            except BackendError as exc:
                if opts.device != "auto" or device != "cuda":
                    raise
                # the GPU looked usable but its runtime would not start (e.g. driver older than the CUDA build):
                # run on the CPU, and say so (the case line and QC record show device cpu)
                print(f"warning: GPU not usable, running on the CPU: {exc}", file=sys.stderr)
                device = "cpu"
                stages = build(device)
            if not opts.tta:
                for net in stages.values():
                    net.flips = [()]
            self._models[modality] = (folder, stages, backend, device)
        return self._models[modality]

    def segment(self, loaded: "LoadedImage", modality: str, record: CaseRecord | None = None) -> np.ndarray:
        """Label map (uint8, numpy z, y, x in the INPUT's voxel order) for a checked image."""
        rec = record if record is not None else CaseRecord()
        if loaded.constant:  # nothing to segment: all background, no network run (read_image noted why)
            rec.modality, rec.input_size_xyz = modality, tuple(loaded.image.GetSize())
            return np.zeros(loaded.array.shape, dtype=np.uint8)
        rec.input_size_xyz = tuple(loaded.image.GetSize())
        rec.input_spacing_xyz = tuple(round(s, 5) for s in loaded.image.GetSpacing())
        return self._segment_case(lambda: CaseContext.of(loaded, modality), modality, rec)

    def segment_array(self, canon: np.ndarray, spacing_zyx: tuple[float, float, float], modality: str,
                      record: CaseRecord | None = None) -> np.ndarray:
        """Label map (uint8, same shape) for an image already on the engine's canonical grid: `canon` in canonical
        voxel order (z, y, x; see orientation.py) with its spacing in mm. The same path as `segment`, without
        SimpleITK; a constant array gets an all-background map without running a network, as in `segment`."""
        canon = np.asarray(canon)
        spacing = tuple(float(s) for s in spacing_zyx)
        if canon.ndim != 3 or len(spacing) != 3:
            raise ValueError(f"a 3D array with 3 spacings expected, got shape {canon.shape} and {spacing_zyx}")
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"invalid voxel spacing {spacing_zyx}")
        if not np.isfinite(canon).all():
            raise ValueError("the array holds NaN or Inf voxels")
        rec = record if record is not None else CaseRecord()
        rec.modality, rec.input_size_xyz = modality, tuple(reversed(canon.shape))
        rec.input_spacing_xyz = tuple(round(s, 5) for s in reversed(spacing))
        if canon.size == 0 or canon.min() == canon.max():
            rec.notes.append("constant image: all-background mask")
            return np.zeros(canon.shape, dtype=np.uint8)
        return self._segment_case(lambda: CaseContext.of_array(canon, spacing, modality), modality, rec)

    def _segment_case(self, make_case, modality: str, rec: CaseRecord) -> np.ndarray:
        """The model for `modality`, then COARSE -> ROI -> FINE -> clean-up -> output on the case `make_case()`."""
        t = time.perf_counter()
        folder, nets, backend, device = self._model_for(modality)
        card = folder.card
        rec.model, rec.backend, rec.device, rec.modality = card.name, backend, device, modality
        rec.seconds["load_model"] = round(time.perf_counter() - t, 4)

        case = make_case()
        rec.orientation = case.orient.describe() or "canonical"
        box, coarse_params = self._region(case, nets, card, rec)
        rec.roi_box_zyx = {"start": list(box.start), "stop": list(box.stop)}
        return self._fine_into_output(case, box, nets, card, rec, coarse_params)

    def _region(self, case: CaseContext, nets, card, rec: CaseRecord) -> tuple[roi.Box, object]:
        """The fine stage's region on the canonical grid and the coarse stage's normalisation: COARSE on the whole
        image at the coarse spacing, then the union of the organs' boxes (within card.roi.max_extent_mm when set)
        + margin; the whole image when no organ is found. (A diagnostic subclass may give another region, e.g.
        benchmarks/oracle_roi.py's box around the reference labels.)"""
        canon, spacing = case.canon, case.spacing
        t = time.perf_counter()
        coarse_labels, coarse_params = self._run_stage(card.coarse, nets["coarse"], canon, spacing, case.sample)
        rec.coarse_shape_zyx = coarse_labels.shape
        rec.seconds["coarse"] = round(time.perf_counter() - t, 4)

        t = time.perf_counter()
        written = card.output_map(case.modality)   # only the organs the mask will hold decide the region
        coarse_labels[~np.isin(coarse_labels, list(written))] = 0
        # stray coarse blobs go before the union of boxes is taken (every organ, 26-connected, no anatomy rule)
        organs = np.unique(coarse_labels[coarse_labels > 0]) if card.roi.largest_component_per_organ else ()
        _clean_up(coarse_labels, card.postprocess, canon.shape[2], roi.Box.whole(canon.shape), organs)
        box = roi.foreground_box(coarse_labels)
        cap_mm = card.roi.max_extent_mm
        if box is not None and cap_mm is not None:
            coarse_spacing = resample.spacing_of_shape(canon.shape, spacing, coarse_labels.shape)
            capped, dropped = roi.plausible_organ_box(coarse_labels, coarse_spacing, cap_mm)
            if capped != box or dropped:
                extent = [round(n * s, 1) for n, s in zip(box.shape, coarse_spacing, strict=True)]
                rec.roi_capped, rec.roi_dropped_organs = True, dropped
                rec.notes.append(f"ROI capped: organs span {extent} mm (z, y, x) > max {list(cap_mm)} mm; "
                                 f"dropped organ(s) {dropped or 'none'}")
                box = capped
        if box is None:
            box = roi.Box.whole(canon.shape)
            rec.roi_fallback_whole_image = True
        else:
            box = roi.scale_box(box, coarse_labels.shape, canon.shape)
            box = roi.expand_box(box, card.roi.margin_mm, spacing, canon.shape)
        rec.seconds["roi"] = round(time.perf_counter() - t, 4)
        return box, coarse_params

    def _fine_into_output(self, case: CaseContext, box: roi.Box, nets, card, rec: CaseRecord,
                          coarse_params) -> np.ndarray:
        # FINE: the ROI at the fine spacing; again on a grown ROI while organs touch a face that is not the image
        # border (card.roi.regrow_mm), bounded by the extent cap + margins when the card has one
        canon, spacing, sample, orient = case.canon, case.spacing, case.sample, case.orient
        t = time.perf_counter()
        keep_probs = card.postprocess.back_to_input == "probabilities"
        fine_labels, fine_params, fine_probs = self._run_stage_with_probabilities(
            card.fine, nets["fine"], roi.crop(canon, box), spacing, sample, keep_probs)
        cfg = card.roi
        max_shape = None
        if cfg.max_extent_mm is not None:
            max_shape = tuple(int(math.ceil((c + 2 * m) / s)) for c, m, s in zip(cfg.max_extent_mm, cfg.margin_mm,
                                                                                   spacing, strict=True))
        for _ in range(cfg.regrow_rounds if cfg.regrow_mm > 0 else 0):
            faces = roi.touched_faces(fine_labels)
            grown = roi.grow_faces(box, faces, cfg.regrow_mm, spacing, canon.shape, max_shape)
            if grown == box:
                break
            rec.notes.append(f"ROI regrown: organs touched faces {faces} (axis, side) of {box.start}-{box.stop}")
            box = grown
            rec.roi_box_zyx = {"start": list(box.start), "stop": list(box.stop)}
            rec.roi_regrow_rounds += 1
            fine_labels, fine_params, fine_probs = self._run_stage_with_probabilities(
                card.fine, nets["fine"], roi.crop(canon, box), spacing, sample, keep_probs)
        rec.fine_shape_zyx = fine_labels.shape
        rec.seconds["fine"] = round(time.perf_counter() - t, 4)
        rec.normalization = ({} if coarse_params is None else {"coarse": coarse_params.as_dict()}) | {
            "fine": fine_params.as_dict()}
        raw_labels = fine_labels.copy() if keep_probs else None   # what the clean-up's changes are found against
        if card.context is not None:   # CONTEXT: one more organ from the fine organs, where the labels allow it
            t = time.perf_counter()
            fine_labels = context.add_organ(fine_labels, card.context, nets["context"].predict,
                                            resample.spacing_of_shape(box.shape, spacing, fine_labels.shape))
            rec.seconds["context"] = round(time.perf_counter() - t, 4)

        # clean-up on the ROI at network resolution (see postprocess.keep_largest_component), output scheme, then
        # labels straight into an output array in the INPUT's voxel order: the canonical view of it is written
        # slab by slab, so neither a full-size copy nor a reorientation of the result is ever made
        t = time.perf_counter()
        post = card.postprocess
        _clean_up(fine_labels, post, canon.shape[2], box, post.largest_component_organs, post.connectivity,
                  post.caudal_to)
        labels = np.zeros(case.out_shape, dtype=np.uint8)
        roi_view = orient.apply(labels)[box.slices]
        if fine_probs is None:
            resample.labels_to_shape(postprocess.relabel(fine_labels, card.output_map(case.modality)), box.shape,
                                     out=roi_view)
        else:
            _probabilities_back(fine_probs, raw_labels, fine_labels, card, case.modality, roi_view)
        counts = postprocess.label_counts(roi_view)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        rec.organ_volumes_ml = {int(k): round(float(counts[k]) * voxel_ml, 2) for k in np.flatnonzero(counts[1:]) + 1}
        rec.seconds["postprocess"] = round(time.perf_counter() - t, 4)
        return labels

    @staticmethod
    def _run_stage(stage: StageConfig, net: Backend, canon: np.ndarray, spacing, sample) -> tuple[np.ndarray, object]:
        """FLARE labels (uint8) at the stage's spacing for the canonical region `canon`."""
        labels, params, _ = Segmenter._run_stage_with_probabilities(stage, net, canon, spacing, sample, False)
        return labels, params

    @staticmethod
    def _run_stage_with_probabilities(stage: StageConfig, net: Backend, canon: np.ndarray, spacing, sample,
                                      probabilities: bool) -> tuple[np.ndarray, object, np.ndarray | None]:
        """`_run_stage` and, with `probabilities`, the class probabilities behind the labels (float16, one channel
        per stage.label_ids; else None)."""
        params = normalization.resolve(stage.normalization, sample)
        shape = resample.shape_at_spacing(canon.shape, spacing, stage.grid_spacing(spacing))
        x = params.apply(resample.resample_linear(canon, shape))
        window = (x, stage.patch_size, stage.step_size, stage.num_classes, net.predict)
        if probabilities:
            channels, probs = sliding_window_probabilities(*window)
        else:
            channels, probs = sliding_window_labels(*window), None
        lut = np.zeros(256, dtype=np.uint8)
        lut[: stage.num_classes] = stage.label_ids
        return lut[channels], params, probs


def _clean_up(labels: np.ndarray, post, image_width: int, box: roi.Box, organs, connectivity: int = 26,
              caudal_to=()) -> None:
    """The clean-up of one stage's labels (in place; `labels` span `box` of a canonical image `image_width` voxels
    wide): right/left organs relabelled by body side when the card lists pairs (else the largest-component step
    would keep one of two "left kidneys"), then each of `organs` kept to its largest component (`caudal_to`:
    postprocess.keep_largest_component)."""
    if post.lateral_pairs:
        postprocess.assign_laterality(labels, post.lateral_pairs, _midline_x(image_width, box, labels.shape[2]),
                                      post.connectivity)
    if len(organs):
        postprocess.keep_largest_component(labels, organs, connectivity, caudal_to)


def _probabilities_back(probs: np.ndarray, raw: np.ndarray, cleaned: np.ndarray, card, modality: str,
                        out: np.ndarray) -> None:
    """The card's `back_to_input` "probabilities": `cleaned` (the fine grid's FLARE labels after the context stage
    and the clean-up) into `out` (the ROI of the output, its shape on the input grid). `probs` (the fine stage's,
    channels of card.fine.label_ids) hold, where `cleaned` differs from the network's own labels `raw`, the
    one-hot vector of the cleaned label (a channel of zeros is added for the context stage's organ), so what the
    clean-up removed stays removed; resample.probabilities_to_labels interpolates them."""
    ids = list(card.fine.label_ids) + ([card.context.adds] if card.context is not None else [])
    if len(ids) > probs.shape[0]:
        probs = np.concatenate([probs, np.zeros((len(ids) - probs.shape[0],) + probs.shape[1:], probs.dtype)])
    channel_of = np.zeros(256, dtype=np.uint8)
    channel_of[ids] = np.arange(len(ids))
    channels = channel_of[cleaned]
    changed = np.nonzero(channels != channel_of[raw])
    probs[(slice(None),) + changed] = 0
    probs[(channels[changed],) + changed] = 1
    out_map = card.output_map(modality)
    values = np.array([out_map.get(i, 0) for i in ids], dtype=np.uint8)
    resample.probabilities_to_labels(probs, channels, values, out.shape, out=out)


def _midline_x(image_width: int, box: roi.Box, grid_width: int) -> float:
    """The canonical image's x centre (scanners centre the field of view on the patient) as an x index of a grid
    of `grid_width` voxels spanning `box` (voxel centres at i + 0.5 of the box's extent)."""
    return (image_width / 2.0 - box.start[2]) * grid_width / box.shape[2] - 0.5


def segment_image(image: "sitk.Image | str | Path", weights_dir: str | Path, *, modality: str | None = None,
                  device: str = "auto", backend: str = "auto", model: str | None = None) -> "sitk.Image":
    """Segment one image: returns a uint8 SimpleITK label map with the input's geometry.

    `image` is a path (modality from its name unless given) or a 3D SimpleITK image (modality defaults to MRI).
    """
    import SimpleITK as sitk

    from .io import LoadedImage, read_image

    if isinstance(image, (str, Path)):
        loaded = read_image(Path(image))
        modality = modality or modality_of(image)
    else:
        arr = sitk.GetArrayViewFromImage(image)
        loaded = LoadedImage(image=image, array=arr)
        modality = modality or "MRI"
    seg = Segmenter(EngineOptions(weights_dir=Path(weights_dir), device=device, backend=backend, model=model))
    labels = seg.segment(loaded, modality)
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(loaded.image)
    return out
