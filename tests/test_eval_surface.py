"""Analytic tests of the surfel-area surface distances and NSD (eval.surface)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from eval.surface import (
    compute_surface_distances,
    dice_coefficient,
    neighbour_code_normals,
    neighbour_code_surface_area_mm2,
    neighbour_codes,
    surface_dice_at_tolerance,
)


def _box_area_mm2(n: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> float:
    """Surfel area of an axis-aligned box of n voxels: face points, edge points, 8 corner points."""
    (nx, ny, nz), (a, b, c) = n, spacing_mm
    faces = 2 * ((nx - 1) * (ny - 1) * a * b + (nx - 1) * (nz - 1) * a * c + (ny - 1) * (nz - 1) * b * c)
    edges = 4 * (
        (nx - 1) * a * math.hypot(b, c) / 2 + (ny - 1) * b * math.hypot(a, c) / 2 + (nz - 1) * c * math.hypot(a, b) / 2
    )
    corners = math.sqrt((b * c) ** 2 + (a * c) ** 2 + (a * b) ** 2)  # 8 triangles of area sqrt(...)/8
    return faces + edges + corners


def test_unit_codes_have_marching_cubes_areas():
    areas = neighbour_code_surface_area_mm2((1.0, 1.0, 1.0))
    assert areas[0] == 0 and areas[255] == 0
    # one inside corner: triangle through three edge midpoints, area sqrt(3)/8
    for bit in range(8):
        assert areas[1 << bit] == pytest.approx(math.sqrt(3) / 8, abs=1e-15)
        assert areas[255 - (1 << bit)] == pytest.approx(math.sqrt(3) / 8, abs=1e-15)
    # half the cube inside (a face): flat unit square
    assert areas[0b11110000] == pytest.approx(1.0) and areas[0b00001111] == pytest.approx(1.0)
    # two corners along an edge: 1 x sqrt(2)/2 rectangle
    assert areas[0b11] == pytest.approx(math.sqrt(2) / 2)
    # a corner and its three neighbours: regular hexagon of side sqrt(2)/2
    assert areas[0b00010111] == pytest.approx(3 * math.sqrt(3) / 2 * 0.5)


def test_complementary_codes_have_equal_area_and_normals_scale_with_spacing():
    spacing = (0.7, 1.9, 4.3)
    areas = neighbour_code_surface_area_mm2(spacing)
    assert np.allclose(areas, areas[::-1], rtol=0, atol=1e-12)
    normals = neighbour_code_normals()
    assert len(normals) == 256 and normals[0].shape == (0, 3)


def test_lookup_table_matches_reference_for_all_codes():
    """Our generated triangles give the reference table's area for every code and spacing."""
    lookup_tables = pytest.importorskip("surface_distance.lookup_tables")
    rng = np.random.default_rng(0)
    spacings = [(1.0, 1.0, 1.0), (1.25, 1.25, 7.7), (3.0, 2.0, 1.0)] + [tuple(rng.uniform(0.2, 8.0, 3)) for _ in range(5)]
    for spacing in spacings:
        ours = neighbour_code_surface_area_mm2(spacing)
        reference = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
        assert np.abs(ours - reference).max() < 1e-12, spacing


def test_neighbour_codes_of_single_voxel():
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    codes = neighbour_codes(mask)
    assert codes.shape == (4, 4, 4)
    # the 8 corner points of the voxel each see it in a different position
    corner_codes = sorted(int(codes[1 + dx, 1 + dy, 1 + dz]) for dx in (0, 1) for dy in (0, 1) for dz in (0, 1))
    assert corner_codes == [1, 2, 4, 8, 16, 32, 64, 128]
    assert np.count_nonzero(codes) == 8


def test_single_voxels_two_mm_apart_anisotropic():
    """Voxels 2 slices apart at spacing (3, 2, 1) mm: half of each surface lies within 1 mm."""
    gt = np.zeros((16, 16, 16), bool)
    pred = np.zeros_like(gt)
    gt[5, 6, 7] = True
    pred[5, 6, 9] = True
    distances = compute_surface_distances(gt, pred, (3.0, 2.0, 1.0))
    assert sorted(set(distances.distances_gt_to_pred_mm.round(12))) == [1.0, 2.0]
    assert surface_dice_at_tolerance(distances, 0.99) == 0.0
    assert surface_dice_at_tolerance(distances, 1.0) == pytest.approx(0.5, abs=1e-15)
    assert surface_dice_at_tolerance(distances, 1.99) == pytest.approx(0.5, abs=1e-15)
    assert surface_dice_at_tolerance(distances, 2.0) == 1.0
    assert dice_coefficient(gt, pred) == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.5, 3.0)])
def test_box_surface_area_is_analytic(spacing):
    mask = np.zeros((12, 13, 14), bool)
    mask[2:6, 3:8, 4:10] = True
    distances = compute_surface_distances(mask, mask, spacing)
    assert distances.surfel_areas_gt_mm2.sum() == pytest.approx(_box_area_mm2((4, 5, 6), spacing), rel=1e-12)
    assert np.all(distances.distances_gt_to_pred_mm == 0)
    assert surface_dice_at_tolerance(distances, 0.0) == 1.0


def test_cube_shifted_by_one_voxel_anisotropic():
    """n-cube shifted one voxel along axis 0 (2 mm): DSC (n-1)/n; NSD 1 at 2 mm and analytic just below."""
    n, spacing = 10, (2.0, 1.0, 1.0)
    a, b, c = spacing
    gt = np.zeros((16, 14, 14), bool)
    gt[2:2 + n, 2:2 + n, 2:2 + n] = True
    pred = np.roll(gt, 1, axis=0)
    assert dice_coefficient(gt, pred) == pytest.approx((n - 1) / n, abs=1e-15)
    distances = compute_surface_distances(gt, pred, spacing)
    assert surface_dice_at_tolerance(distances, 2.0) == 1.0
    # Below 2 mm, each surface loses: its whole trailing face (interior points, the 4 ring edges,
    # 4 corners) and the interior points of its leading face that are >= 2 voxels from the sides.
    total = _box_area_mm2((n, n, n), spacing)
    ring_edges = 2 * (n - 1) * b * math.hypot(a, c) / 2 + 2 * (n - 1) * c * math.hypot(a, b) / 2
    four_corners = 4 * math.sqrt((b * c) ** 2 + (a * c) ** 2 + (a * b) ** 2) / 8
    lost = (n - 1) ** 2 * b * c + ring_edges + four_corners + (n - 3) ** 2 * b * c
    assert surface_dice_at_tolerance(distances, 1.99) == pytest.approx(1 - lost / total, abs=1e-12)


def _ball(shape, centre_mm, radius_mm, spacing_mm):
    grids = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing_mm, strict=True)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True)) <= radius_mm**2


def test_concentric_spheres_at_known_distance():
    """Surfaces 12 mm apart (voxel error < 2 x 2 mm): NSD 0 at 6 mm, 1 at 18 mm, in between at 12 mm."""
    spacing = (1.5, 1.5, 2.0)
    shape = (40, 40, 32)
    centre = (30.0, 30.0, 32.0)
    inner = _ball(shape, centre, 10.0, spacing)
    outer = _ball(shape, centre, 22.0, spacing)
    distances = compute_surface_distances(inner, outer, spacing)
    assert surface_dice_at_tolerance(distances, 6.0) == 0.0
    assert surface_dice_at_tolerance(distances, 18.0) == 1.0
    assert 0.0 < surface_dice_at_tolerance(distances, 12.0) < 1.0
    expected_dice = 2 * inner.sum() / (inner.sum() + outer.sum())
    assert dice_coefficient(inner, outer) == pytest.approx(expected_dice)


def test_sphere_shifted_by_whole_voxels_is_within_shift_distance():
    spacing = (1.5, 1.5, 3.0)
    shape = (30, 30, 20)
    gt = _ball(shape, (22.5, 22.5, 30.0), 12.0, spacing)
    pred = np.roll(gt, 2, axis=2)  # 6 mm
    distances = compute_surface_distances(gt, pred, spacing)
    assert surface_dice_at_tolerance(distances, 6.0) == 1.0
    assert surface_dice_at_tolerance(distances, 2.9) < 1.0
    assert distances.distances_gt_to_pred_mm.max() == pytest.approx(6.0)


def test_empty_masks():
    empty = np.zeros((5, 5, 5), bool)
    one = empty.copy()
    one[2, 2, 2] = True
    both = compute_surface_distances(empty, empty, (1, 1, 1))
    assert both.distances_gt_to_pred_mm.size == 0 and both.surfel_areas_pred_mm2.size == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(surface_dice_at_tolerance(both, 1.0))
        assert math.isnan(dice_coefficient(empty, empty))
    only_gt = compute_surface_distances(one, empty, (1, 1, 1))
    assert np.all(np.isinf(only_gt.distances_gt_to_pred_mm)) and only_gt.distances_pred_to_gt_mm.size == 0
    assert surface_dice_at_tolerance(only_gt, 100.0) == 0.0


def test_masks_touching_the_array_border_are_closed():
    mask = np.ones((3, 4, 5), bool)
    distances = compute_surface_distances(mask, mask, (1.0, 1.0, 1.0))
    assert distances.surfel_areas_gt_mm2.sum() == pytest.approx(_box_area_mm2((3, 4, 5), (1.0, 1.0, 1.0)))


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        compute_surface_distances(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool), (1, 1, 1))
    with pytest.raises(ValueError):
        compute_surface_distances(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool), (1, 1))
