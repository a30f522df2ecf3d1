"""Integer GEMM with the accelerator's exact arithmetic: the single reference for tb and sw.

Operands are signed ``operand_bits`` integers (INT8 by default); products are exact and are
summed in a signed ``acc_bits`` accumulator (INT32 by default) that wraps around modulo
``2**acc_bits`` on overflow, as the hardware's adders do. Any order of summation gives the same
wrapped result, so tiling the reduction never changes a bit.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "check_operand",
    "gemm",
    "max_safe_reduction",
    "rand_int",
    "wrap",
]


def _int_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def wrap(x: NDArray[np.integer], bits: int) -> NDArray[np.int64]:
    """Reduce integers modulo ``2**bits`` into the signed range (two's-complement wrap)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be between 1 and 64, not {bits!r}")
    x = np.asarray(x, dtype=np.int64)
    if bits == 64:
        return x
    mask = (1 << bits) - 1
    half = 1 << (bits - 1)
    return ((x + half) & mask) - half


def check_operand(name: str, x: NDArray[np.integer], bits: int) -> NDArray[np.int64]:
    """Return ``x`` as int64 after checking it is a 2-D integer matrix in the signed range."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, not shape {arr.shape!r}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not {arr.dtype}")
    lo, hi = _int_range(bits)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} has values outside the signed {bits}-bit range [{lo}, {hi}]")
    return arr.astype(np.int64)


def gemm(
    a: NDArray[np.integer],
    b: NDArray[np.integer],
    *,
    operand_bits: int = 8,
    acc_bits: int = 32,
    c: NDArray[np.integer] | None = None,
) -> NDArray[np.int64]:
    """Return ``wrap(c + a @ b)`` with the accelerator's operand and accumulator widths.

    Parameters
    ----------
    a, b : integer matrices of shape (M, K) and (K, N) in the signed ``operand_bits`` range.
    c : optional (M, N) accumulator input (the output buffer's "accumulate" mode).

    Returns
    -------
    An (M, N) int64 array whose values lie in the signed ``acc_bits`` range; ``.astype(np.int32)``
    is lossless for the default 32-bit accumulator.
    """
    a64 = check_operand("a", a, operand_bits)
    b64 = check_operand("b", b, operand_bits)
    if a64.shape[1] != b64.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {a64.shape}, b is {b64.shape}")
    # Each product fits in 2*operand_bits bits; int64 holds the exact sum for any K below
    # 2**(63 - 2*operand_bits), far beyond any SRAM, so wrapping once at the end is exact.
    out = a64 @ b64
    if c is not None:
        c64 = np.asarray(c, dtype=np.int64)
        if c64.shape != out.shape:
            raise ValueError(f"c must have shape {out.shape}, not {c64.shape}")
        out = out + c64
    return wrap(out, acc_bits)


def max_safe_reduction(*, operand_bits: int = 8, acc_bits: int = 32) -> int:
    """Longest reduction K whose sum cannot wrap, whatever the operands.

    The worst case is ``K`` products of ``-2**(b-1) * -2**(b-1)``; the software refuses GEMMs
    longer than this so that wrap-around never silently changes a training step.
    """
    worst = (1 << (operand_bits - 1)) ** 2
    return ((1 << (acc_bits - 1)) - 1) // worst


def rand_int(rng: np.random.Generator, shape: tuple[int, ...], bits: int = 8) -> NDArray[np.int64]:
    """Uniform random signed ``bits``-bit integers over the full range, from ``rng``."""
    lo, hi = _int_range(bits)
    return rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
