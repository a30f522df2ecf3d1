"""Pack vectors into the integers that carry them on hardware ports, and back.

Lane 0 sits in the least significant bits, as in Amaranth's ``data.ArrayLayout``: a port of N
signed 8-bit lanes is the integer ``sum((x[i] & 0xff) << 8*i)``. tb and sw both use these
helpers so that a lane-order mistake can only be made once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["pack", "pack_rows", "unpack", "unpack_rows"]


def pack(values: Sequence[int] | NDArray[np.integer], bits: int) -> int:
    """Pack signed or unsigned lane values, lane 0 in the low bits, into one integer."""
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(np.asarray(values, dtype=np.int64).tolist()):
        word |= (v & mask) << (bits * i)
    return word


def unpack(word: int, bits: int, lanes: int, *, signed: bool = True) -> NDArray[np.int64]:
    """Split an integer into ``lanes`` values of ``bits`` bits (lane 0 from the low bits)."""
    if word < 0:
        raise ValueError("a packed word is a non-negative integer")
    mask = (1 << bits) - 1
    out = np.array([(word >> (bits * i)) & mask for i in range(lanes)], dtype=np.int64)
    if signed:
        out = np.where(out >= 1 << (bits - 1), out - (1 << bits), out)
    return out


def pack_rows(matrix: NDArray[np.integer], bits: int) -> list[int]:
    """Pack each row of a 2-D matrix into one integer."""
    return [pack(row, bits) for row in np.asarray(matrix)]


def unpack_rows(words: Sequence[int], bits: int, lanes: int) -> NDArray[np.int64]:
    """Unpack a sequence of packed rows into a (len(words), lanes) signed matrix."""
    if not words:
        return np.zeros((0, lanes), dtype=np.int64)
    return np.stack([unpack(w, bits, lanes) for w in words])
