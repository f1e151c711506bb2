"""Surfel-area surface distances and the normalised surface Dice (NSD).

This is the algorithm of the organizers' ``SurfaceDice.py`` (DeepMind's
surface-distance method), written here with numpy/scipy only:

1. Each corner point of the voxel grid gets an 8-bit *neighbour code* from the
   2x2x2 voxels around it (bit ``7 - (4*dx + 2*dy + dz)`` is set when the voxel
   at offset ``(dx, dy, dz)`` from the point's lower voxel is inside the mask).
2. Points whose code is neither 0 nor 255 are surface points ("surfels").
   Each carries the area, in mm^2, of the marching-cubes triangles of its code
   under the given voxel spacing.
3. Distances (mm) from every surfel of one mask to the nearest surfel of the
   other come from ``scipy.ndimage.distance_transform_edt(..., sampling=spacing_mm)``
   on the corner-point grid.
4. NSD at ``tolerance_mm`` = (area of GT surfels within tolerance + area of predicted
   surfels within tolerance) / (total GT area + total predicted area); "within"
   means ``distance <= tolerance_mm``.

The per-code triangles are generated below, not copied: edge-midpoint marching
cubes where a cube with more than four inside corners is handled as its complement
(the classic Lorensen-Cline symmetry, which keeps the *outside* corners apart on
ambiguous faces), inside corners are kept apart on ambiguous faces otherwise, and
each contour polygon is triangulated with the triangulation of largest area. The
tests check that the resulting per-code areas equal those of the reference lookup
table (the one in SurfaceDice.py / surface-distance 0.1) for all 256 codes and
several anisotropic spacings.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage

from .dice import dice_coefficient, dice_per_label  # noqa: F401  (re-exported: the one Dice)

__all__ = [
    "SurfaceDistances",
    "neighbour_code_normals",
    "neighbour_code_surface_area_mm2",
    "neighbour_codes",
    "compute_surface_distances",
    "surface_dice_at_tolerance",
    "dice_coefficient",
    "dice_per_label",
]

# Corner c of the 2x2x2 neighbourhood sits at offset (dx, dy, dz) with c = 4*dx + 2*dy + dz.
_CORNER_XYZ = np.array([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=np.float64)
_CUBE_EDGES = tuple(
    (a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1
)


def _corner_inside(code: int, corner: int) -> bool:
    """Bit ``7 - corner`` of ``code`` says whether ``corner`` is inside the mask."""
    return bool((code >> (7 - corner)) & 1)


def _contour_polygons(code: int) -> list[list[np.ndarray]]:
    """Closed contour polygons (vertex lists, edge midpoints) of one cube configuration.

    On every cube face the crossing edges are joined by segments; a face with four
    crossings (inside corners on a diagonal) gets one segment around each inside
    corner, i.e. inside corners are kept apart. Segments are then chained into cycles.
    """
    segments: list[tuple[tuple[int, int], tuple[int, int]]] = []
    for axis in range(3):
        for side in (0, 1):
            face = [c for c in range(8) if ((c >> (2 - axis)) & 1) == side]
            face_edges = [e for e in _CUBE_EDGES if e[0] in face and e[1] in face]
            crossing = [e for e in face_edges if _corner_inside(code, e[0]) != _corner_inside(code, e[1])]
            if len(crossing) == 2:
                segments.append((crossing[0], crossing[1]))
            elif len(crossing) == 4:
                for corner in face:
                    if _corner_inside(code, corner):
                        around = [e for e in face_edges if corner in e]
                        segments.append((around[0], around[1]))
    neighbours: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, b in segments:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    seen: set[tuple[int, int]] = set()
    polygons: list[list[np.ndarray]] = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        cycle, previous, current = [start], None, start
        seen.add(start)
        while True:
            following = [n for n in neighbours[current] if n != previous and n not in seen]
            if not following:
                break
            previous, current = current, following[0]
            cycle.append(current)
            seen.add(current)
        polygons.append([(_CORNER_XYZ[a] + _CORNER_XYZ[b]) / 2.0 for a, b in cycle])
    return polygons


def _triangulations(vertex_ids: list[int]) -> Iterator[list[tuple[int, int, int]]]:
    """All triangulations of a polygon given by its vertex ids in cyclic order."""
    if len(vertex_ids) < 3:
        yield []
        return
    first, last = vertex_ids[0], vertex_ids[-1]
    for k in range(1, len(vertex_ids) - 1):
        apex = vertex_ids[k]
        for left in _triangulations(vertex_ids[: k + 1]):
            for right in _triangulations(vertex_ids[k:]):
                yield left + right + [(first, apex, last)]


def _largest_area_triangle_normals(polygon: list[np.ndarray]) -> list[np.ndarray]:
    """Area-weighted normals (|n| = triangle area) of the largest-area triangulation."""
    best_area, best_normals = -1.0, []
    for triangles in _triangulations(list(range(len(polygon)))):
        normals = [np.cross(polygon[j] - polygon[i], polygon[k] - polygon[i]) / 2.0 for i, j, k in triangles]
        area = float(sum(np.linalg.norm(n) for n in normals))
        if area > best_area + 1e-12:
            best_area, best_normals = area, normals
    return best_normals


@lru_cache(maxsize=1)
def neighbour_code_normals() -> tuple[np.ndarray, ...]:
    """For each of the 256 neighbour codes, an (n_triangles, 3) array of area-weighted normals.

    Unit voxel; a normal's length is its triangle's area. Codes 0 and 255 have none.
    """
    table = []
    for code in range(256):
        inside_count = bin(code).count("1")
        configuration = code if inside_count <= 4 else 255 - code
        normals = [n for polygon in _contour_polygons(configuration) for n in _largest_area_triangle_normals(polygon)]
        table.append(np.array(normals, dtype=np.float64).reshape(-1, 3))
    return tuple(table)


def neighbour_code_surface_area_mm2(spacing_mm: Sequence[float]) -> np.ndarray:
    """Surface area (mm^2) of each of the 256 neighbour codes for voxel spacing ``spacing_mm``.

    A triangle's normal (nx, ny, nz) on the unit grid becomes
    (nx*s1*s2, ny*s0*s2, nz*s0*s1) on the scaled grid; its length is the area.
    Returns a new array (callers may modify it).
    """
    return _surface_area_table(tuple(float(s) for s in spacing_mm)).copy()


@lru_cache(maxsize=32)
def _surface_area_table(spacing_mm: tuple[float, float, float]) -> np.ndarray:
    s0, s1, s2 = spacing_mm
    scale = np.array([s1 * s2, s0 * s2, s0 * s1], dtype=np.float64)
    areas = np.zeros(256, dtype=np.float64)
    for code, normals in enumerate(neighbour_code_normals()):
        if len(normals):
            areas[code] = float(np.linalg.norm(normals * scale, axis=1).sum())
    return areas


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every corner point of a 3-D boolean mask.

    Returns a uint8 array of shape ``mask.shape + 1``; entry ``p`` describes the
    voxels ``p - 1 + (dx, dy, dz)`` for dx, dy, dz in {0, 1} (outside the array = 0).
    """
    padded = np.pad(mask.astype(np.uint8), 1)
    nx, ny, nz = (s + 1 for s in mask.shape)
    codes = np.zeros((nx, ny, nz), dtype=np.uint8)
    for corner in range(8):
        dx, dy, dz = (int(v) for v in _CORNER_XYZ[corner])
        codes |= padded[dx:dx + nx, dy:dy + ny, dz:dz + nz] << np.uint8(7 - corner)
    return codes


@dataclass(frozen=True)
class SurfaceDistances:
    """Surfel distances (mm) and areas (mm^2) of both masks, in no particular order.

    Edge cases: if both masks are empty every array is empty; if only one mask is
    empty the other's distances are all ``inf``.
    """

    distances_gt_to_pred_mm: np.ndarray
    distances_pred_to_gt_mm: np.ndarray
    surfel_areas_gt_mm2: np.ndarray
    surfel_areas_pred_mm2: np.ndarray


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    if mask.size == 0:
        return None
    found = ndimage.find_objects(mask.astype(np.uint8))
    return found[0] if found else None


def compute_surface_distances(
    mask_gt: np.ndarray, mask_pred: np.ndarray, spacing_mm: Sequence[float]
) -> SurfaceDistances:
    """Distances between the surfels of two 3-D boolean masks of equal shape.

    ``spacing_mm`` gives the voxel size along array axes 0, 1, 2. The work is done
    on the joint bounding box of both masks plus a one-voxel zero border, which
    gives the same result as the whole array.
    """
    mask_gt = np.asarray(mask_gt, dtype=bool)
    mask_pred = np.asarray(mask_pred, dtype=bool)
    if mask_gt.ndim != 3 or mask_gt.shape != mask_pred.shape:
        raise ValueError(f"need two 3-D masks of equal shape, got {mask_gt.shape} and {mask_pred.shape}")
    if len(spacing_mm) != 3:
        raise ValueError(f"need 3 spacings, got {spacing_mm!r}")
    empty = np.zeros(0, dtype=np.float64)
    box = _bounding_box(mask_gt | mask_pred)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    spacing = tuple(float(s) for s in spacing_mm)
    areas_by_code = _surface_area_table(spacing)
    codes_gt = neighbour_codes(mask_gt[box])
    codes_pred = neighbour_codes(mask_pred[box])
    borders_gt = (codes_gt != 0) & (codes_gt != 255)
    borders_pred = (codes_pred != 0) & (codes_pred != 255)

    def distance_to(borders: np.ndarray) -> np.ndarray:
        if not borders.any():
            return np.full(borders.shape, np.inf)
        return ndimage.distance_transform_edt(~borders, sampling=spacing)

    distmap_gt = distance_to(borders_gt)
    distmap_pred = distance_to(borders_pred)
    return SurfaceDistances(
        distances_gt_to_pred_mm=distmap_pred[borders_gt],
        distances_pred_to_gt_mm=distmap_gt[borders_pred],
        surfel_areas_gt_mm2=areas_by_code[codes_gt[borders_gt]],
        surfel_areas_pred_mm2=areas_by_code[codes_pred[borders_pred]],
    )


def surface_dice_at_tolerance(distances: SurfaceDistances, tolerance_mm: float) -> float:
    """Normalised surface Dice: surfel area within ``tolerance_mm`` (inclusive) over total area.

    Edge case: both masks empty gives 0/0 = NaN (the organizers' scorer never asks
    for it: it decides empty cases before calling this).
    """
    overlap_gt = distances.surfel_areas_gt_mm2[distances.distances_gt_to_pred_mm <= tolerance_mm].sum()
    overlap_pred = distances.surfel_areas_pred_mm2[distances.distances_pred_to_gt_mm <= tolerance_mm].sum()
    total = distances.surfel_areas_gt_mm2.sum() + distances.surfel_areas_pred_mm2.sum()
    if total == 0:
        return float("nan")
    return float((overlap_gt + overlap_pred) / total)
