"""Training patches: a random in-plane affine out of a slice, then appearance changes, in torch (CPU or GPU).

`sample_patch` maps each output pixel through the inverse affine into the slice (bilinear for the image, nearest
for labels and regions) and marks which pixels fall inside the slice and, for an engine-like ROI crop, inside a
jittered organ box + margin; `finish` sets every other pixel to 0, the value the engine pads with after its
normalisation. `appearance` is applied to a batch of patches in [0, 1].
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .data import SliceBank
from .recipe import Appearance, Spatial


def patch_grid(center_yx, patch, angle_rad: float, zoom_yx, shape_yx) -> torch.Tensor:
    """grid_sample grid (1, P, Q, 2) for a patch of `patch` pixels centred on `center_yx` of a slice of
    `shape_yx`: output pixel offset d from the patch centre samples the slice at centre + R(angle) d / zoom."""
    py, px = patch
    oy = torch.arange(py, dtype=torch.float32) - (py - 1) / 2
    ox = torch.arange(px, dtype=torch.float32) - (px - 1) / 2
    dy, dx = torch.meshgrid(oy / zoom_yx[0], ox / zoom_yx[1], indexing="ij")
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    y = center_yx[0] + c * dy - s * dx
    x = center_yx[1] + s * dy + c * dx
    h, w = shape_yx
    # align_corners=False: pixel i of n sits at normalised (2 i + 1) / n - 1
    return torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)[None]


def sample_patch(bank: SliceBank, spatial: Spatial, patch, rng: np.random.Generator, roi_mask: bool):
    """(image (1, P, Q) in [0, 1], labels (P, Q) long, regions (P, Q) long, inside (P, Q) bool, the appearance
    policy of the patch's bank or None)."""
    vol, z, centre, policy = bank.pick(rng, rng.random() < spatial.p_foreground)
    angle = math.radians(rng.uniform(-spatial.rotation_deg, spatial.rotation_deg))
    zoom = rng.uniform(*spatial.zoom)
    zoom_yx = tuple(zoom * rng.uniform(1 - spatial.stretch, 1 + spatial.stretch) for _ in range(2))
    h, w = vol.image.shape[1:]
    grid = patch_grid(centre, patch, angle, zoom_yx, (h, w))
    img = torch.from_numpy(vol.image[z].astype(np.float32))[None, None]
    maps = torch.from_numpy(np.stack((vol.labels[z], vol.regions[z])).astype(np.float32))[None]
    image = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    lab = F.grid_sample(maps, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0].long()
    # source pixel coordinates of every output pixel, to know which fall inside the slice / the ROI
    sx = ((grid[0, ..., 0] + 1) * w - 1) / 2
    sy = ((grid[0, ..., 1] + 1) * h - 1) / 2
    inside = (sy > -0.5) & (sy < h - 0.5) & (sx > -0.5) & (sx < w - 0.5)
    if roi_mask and vol.organ_box is not None and rng.random() < spatial.p_roi_mask:
        (y0, y1), (x0, x1) = vol.organ_box
        my, mx = (rng.uniform(*spatial.roi_margin_mm) / s for s in vol.spacing_mm[1:])
        inside &= (sy > y0 - my) & (sy < y1 + my) & (sx > x0 - mx) & (sx < x1 + mx)
    return image, lab[0], lab[1], inside, policy


def _curve(x: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map of [0, 1] through len(knots) equally spaced control values."""
    k = knots.numel() - 1
    t = x.clamp(0, 1) * k
    i = t.floor().clamp(max=k - 1).long()
    f = t - i
    return knots[i] * (1 - f) + knots[i + 1] * f


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    g = g / g.sum()
    x = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))[0]


def appearance(x: torch.Tensor, regions: torch.Tensor, n_regions: int, a: Appearance,
               gen: torch.Generator) -> torch.Tensor:
    """One patch (1, P, Q) in [0, 1] -> a new appearance (any range: the caller standardises it)."""
    dev = x.device

    def u(lo=0.0, hi=1.0) -> float:
        return float(torch.empty((), device="cpu").uniform_(lo, hi, generator=gen))

    if a.strong and (a.p_strong >= 1.0 or u() < a.p_strong):
        if u() < a.p_curve:
            x = _curve(x, torch.rand(a.curve_knots, generator=gen).to(dev))
        if u() < a.p_region:
            scale = torch.empty(n_regions + 1).uniform_(*a.region_scale, generator=gen).to(dev)
            shift = (torch.rand(n_regions + 1, generator=gen) * 2 - 1).to(dev) * a.region_shift
            x = x * scale[regions] + shift[regions]
        if u() < a.p_bias:
            field = torch.randn((1, 1, 4, 4), generator=gen).to(dev) * a.bias_std
            field = F.interpolate(field, size=x.shape[-2:], mode="bicubic", align_corners=True)[0]
            x = x * torch.exp(field)
    if u() < a.p_contrast:
        m = x.mean()
        x = (x - m) * u(*a.contrast) + m
    if u() < a.p_gamma:
        lo, hi = x.min(), x.max()
        x = ((x - lo) / (hi - lo).clamp_min(1e-6)) ** u(*a.gamma) * (hi - lo) + lo
    if u() < a.p_blur:
        x = _blur(x, u(*a.blur_sigma_px))
    if u() < a.p_noise:
        x = x + torch.randn(x.shape, generator=gen).to(dev) * u(*a.noise_std) * x.std().clamp_min(1e-3)
    return x


def finish(x: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Standardise over the pixels inside (the engine z-scores the image; the network's instance norm makes a
    global affine change immaterial) and set the pixels outside to 0, the engine's padding value."""
    vals = x[:, inside]
    if vals.numel() < 2:
        return torch.zeros_like(x)
    out = (x - vals.mean()) / vals.std().clamp_min(1e-3)
    return out * inside


def make_batch(bank: SliceBank, spatial: Spatial, a: Appearance, patch, batch: int, rng: np.random.Generator,
               gen: torch.Generator, roi_mask: bool, device: str = "cpu"):
    """(images (B, 1, P, Q) float32, labels (B, P, Q) long) on `device`; `a`: the appearance policy of the patches
    whose bank has none of its own."""
    n_regions = bank.num_classes
    xs, ys = [], []
    for _ in range(batch):
        img, lab, reg, inside, policy = sample_patch(bank, spatial, patch, rng, roi_mask)
        img, reg, inside = img.to(device), reg.to(device), inside.to(device)
        x = finish(appearance(img, reg, n_regions, policy or a, gen), inside)
        xs.append(x)
        ys.append(lab.to(device) * inside.long())
    return torch.stack(xs), torch.stack(ys)
