"""Checks SimpleITK cannot make: a truncated gzip stream and non-finite voxels.

ITK's NIfTI reader accepts a gzip stream cut short (the missing voxels come back as zeros) and reads NaN/Inf as
0, so both would reach the networks silently. This module reads the NIfTI header itself (NIfTI-1 and NIfTI-2,
either byte order): the data size it promises is compared with the size the gzip trailer records, and float
images are streamed once through zlib to locate non-finite voxels (integer images cannot hold them).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# NIfTI datatype code -> numpy dtype (without byte order)
DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
CHUNK_BYTES = 1 << 24


class NiftiContainerError(ValueError):
    pass


@dataclass(frozen=True)
class NiftiLayout:
    byteorder: str  # '<' or '>'
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    vox_offset: int
    gzipped: bool

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.dims)) if self.dims else 0

    @property
    def data_bytes(self) -> int:
        return self.n_voxels * self.bitpix // 8

    @property
    def dtype(self) -> np.dtype | None:
        code = DTYPES.get(self.datatype)
        return np.dtype(self.byteorder + code) if code else None


def _open(path: Path, gzipped: bool):
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_layout(path: Path) -> NiftiLayout:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with _open(path, gzipped) as f:
            head = f.read(540)
    except (EOFError, zlib.error, OSError):
        raise NiftiContainerError("truncated or corrupt gzip stream") from None
    if len(head) < 348:
        raise NiftiContainerError("not a NIfTI file (shorter than a NIfTI header)")
    for bo in "<>":
        size = struct.unpack(bo + "i", head[:4])[0]
        if size == 348:
            ndim = struct.unpack(bo + "h", head[40:42])[0]
            dims = struct.unpack(bo + "7h", head[42:56])
            datatype, bitpix = struct.unpack(bo + "hh", head[70:74])
            vox_offset = int(struct.unpack(bo + "f", head[108:112])[0])
            break
        if size == 540 and len(head) >= 540:
            datatype, bitpix = struct.unpack(bo + "hh", head[12:16])
            ndim = struct.unpack(bo + "q", head[16:24])[0]
            dims = struct.unpack(bo + "7q", head[24:80])
            vox_offset = int(struct.unpack(bo + "q", head[168:176])[0])
            break
    else:
        raise NiftiContainerError("not a NIfTI file (no NIfTI header)")
    if not 1 <= ndim <= 7:
        raise NiftiContainerError(f"NIfTI header gives {ndim} dimensions")
    return NiftiLayout(bo, tuple(int(d) for d in dims[:ndim]), int(datatype), int(bitpix), vox_offset, gzipped)


def check_complete(path: Path, layout: NiftiLayout) -> None:
    """Raise when the file holds fewer voxel bytes than its header promises."""
    expected = layout.vox_offset + layout.data_bytes
    if not layout.gzipped:
        if path.stat().st_size < expected:
            raise NiftiContainerError(f"truncated: {path.stat().st_size} bytes, the header needs {expected}")
        return
    with open(path, "rb") as f:
        f.seek(-4, 2)
        isize = struct.unpack("<I", f.read(4))[0]  # uncompressed size mod 2**32 (gzip trailer)
    if isize == expected % (1 << 32):
        return
    # disagreement: a truncated stream, or a multi-member gzip whose last member is short; decompress to decide
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while True:
                block = g.read(CHUNK_BYTES)
                if not block:
                    break
                total += len(block)
    except (EOFError, zlib.error, OSError):
        raise NiftiContainerError("truncated or corrupt gzip stream") from None
    if total < expected:
        raise NiftiContainerError(f"truncated: {total} bytes of data, the header needs {expected}")


def nonfinite_mask(path: Path, layout: NiftiLayout) -> np.ndarray | None:
    """Flat boolean mask (file/C order) of NaN/Inf voxels, or None when there are none (or no floats)."""
    dtype = layout.dtype
    if dtype is None or dtype.kind != "f":
        return None
    mask = None
    item = dtype.itemsize
    with _open(path, layout.gzipped) as f:
        f.read(layout.vox_offset)
        done = 0
        while done < layout.n_voxels:
            want = min(CHUNK_BYTES // item, layout.n_voxels - done)
            block = f.read(want * item)
            if len(block) < want * item:
                raise NiftiContainerError("truncated: the voxel data ends early")
            bad = ~np.isfinite(np.frombuffer(block, dtype=dtype))
            if bad.any():
                if mask is None:
                    mask = np.zeros(layout.n_voxels, dtype=bool)
                mask[done:done + want] = bad
            done += want
    return mask
