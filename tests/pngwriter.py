"""A minimal 16-bit PNG writer for the tests (Pillow cannot write 16-bit RGB), independent of the package."""

from __future__ import annotations

import struct
import zlib

import numpy as np

_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # planes -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def write_png16(path, array: np.ndarray) -> str:
    """Write ``[H, W]`` or ``[H, W, planes]`` uint16 as a 16-bit PNG."""
    array = np.asarray(array, dtype=">u2")
    planes = 1 if array.ndim == 2 else array.shape[2]
    height, width = array.shape[:2]
    raw = b"".join(b"\x00" + array[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, _COLOR_TYPES[planes], 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return str(path)
