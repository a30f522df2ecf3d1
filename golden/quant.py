"""The paper's symmetric quantizer (Eq. 2): the one place where floats become INT8 and back.

``S = Xmax / (2**(q-1) - 1)`` and ``X~ = round(X / S)``, with ``Xmax = max |X|`` over the
elements that share one scale. Decisions, fixed here so that golden, software and RTL agree:

Symmetric and saturating
    Integers lie in ``[-(2**(q-1) - 1), 2**(q-1) - 1]`` (``[-127, 127]`` for q = 8); ``-2**(q-1)``
    is never produced, so negation never overflows and ``-128 * -128`` only comes from foreign
    data. Anything beyond the range after rounding (a caller-supplied scale, stochastic rounding
    of ``Xmax``) saturates to the nearest end instead of wrapping.
Rounding
    ``"nearest"`` rounds to the nearest integer with ties to even (IEEE 754's default, what
    ``np.rint`` and ``torch.round`` do): unbiased on ties, and the same on every platform.
    ``"stochastic"`` rounds ``v`` up with probability ``v - floor(v)``; it needs a ``seed`` (an
    int or a ``np.random.Generator``) so that a training step is reproducible. It is unbiased,
    which keeps tiny gradients alive, at twice the worst-case error of nearest rounding.
Precision
    Scales are float32 (what a dequantization unit would hold):
    ``S = float32(Xmax) / float32(qmax)``, rounded once in float32. ``X / S`` is evaluated in
    float64, so the only rounding that matters is the one to an integer.
Zeros
    A tensor or channel that is entirely zero gets the scale 1.0 instead of 0: its integers are 0
    either way, dequantization gives exact zeros, and no consumer ever divides by zero or sees a
    NaN. Non-finite inputs (NaN, inf) are rejected: no scale can represent them.
Granularity
    ``axis=None`` gives one scale for the tensor (weights). ``axis=i`` keeps one scale per index
    along axis ``i`` (activations and gradients, "per channel"); the maximum is taken over all
    other axes. Which axis each GEMM of the LoRA layer uses is tabulated in ``golden/lora.py``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cdm_qta.hw.checks import check_int

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "QTensor",
    "Rounding",
    "check_bits",
    "compute_scale",
    "dequantize",
    "qmax",
    "quantize",
]

MIN_BITS = 2
MAX_BITS = 16

Rounding = Literal["nearest", "stochastic"]
_ROUNDINGS: tuple[str, ...] = ("nearest", "stochastic")


def check_bits(q: int) -> int:
    """Return ``q`` as an int after checking it is a supported bit width (2 to 16)."""
    return check_int("q", q, MIN_BITS, MAX_BITS)


def qmax(q: int = 8) -> int:
    """Largest integer magnitude of the symmetric ``q``-bit grid: ``2**(q-1) - 1``."""
    return (1 << (check_bits(q) - 1)) - 1


def _storage_dtype(q: int) -> type[np.signedinteger]:
    return np.int8 if q <= 8 else np.int16


def _as_float(x: ArrayLike) -> NDArray[np.float32]:
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"cannot quantize an array of {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("cannot quantize a tensor holding NaN or infinity")
    return arr


def _reduce_axes(ndim: int, axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, bool):
        raise ValueError(f"axis must be None or an integer, not {axis!r}")
    ax = operator.index(axis)
    if not -ndim <= ax < ndim:
        raise ValueError(f"axis {axis!r} is out of range for a {ndim}-D tensor")
    ax %= ndim
    return tuple(i for i in range(ndim) if i != ax)


def compute_scale(x: ArrayLike, *, axis: int | None = None, q: int = 8) -> NDArray[np.float32]:
    """Return the float32 scales of ``x``, shaped to broadcast against it (``keepdims``).

    ``axis=None`` gives a single scale; ``axis=i`` one scale per index along axis ``i``.
    All-zero groups get 1.0 (see the module docstring).
    """
    arr = _as_float(x)
    top = np.float32(qmax(q))
    xmax = np.max(np.abs(arr), axis=_reduce_axes(arr.ndim, axis), keepdims=True, initial=0.0)
    xmax = xmax.astype(np.float32)
    with np.errstate(under="ignore"):  # a subnormal Xmax / 127 may underflow to zero
        scale = np.divide(xmax, top, out=np.ones_like(xmax), where=xmax > 0)
    # An underflowed scale falls back to 1.0 like an all-zero group: its integers are 0.
    return np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)


def _round(
    v: NDArray[np.float64], rounding: str, seed: int | np.random.Generator | None
) -> NDArray[np.float64]:
    if rounding == "nearest":
        return np.rint(v)
    if rounding == "stochastic":
        if seed is None:
            raise ValueError("stochastic rounding needs a seed (an int or a np.random.Generator)")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        floor = np.floor(v)
        return floor + (rng.random(v.shape) < (v - floor))
    raise ValueError(f"rounding must be one of {_ROUNDINGS}, not {rounding!r}")


@dataclass(frozen=True)
class QTensor:
    """Integers plus the scales that turn them back into real numbers: ``values * scale``.

    Members
    -------
    values : int8 (q <= 8) or int16 array in ``[-qmax(q), qmax(q)]``.
    scale : float32 array with ``values.ndim`` dimensions that broadcasts against ``values``.
    axis : the axis with one scale per index, or None for one scale per tensor.
    q : bit width.
    """

    values: NDArray[np.signedinteger]
    scale: NDArray[np.float32]
    axis: int | None
    q: int = 8

    @property
    def scale_vector(self) -> NDArray[np.float32]:
        """Scales as a 1-D array: one per index along ``axis`` (length 1 if per-tensor)."""
        return self.scale.reshape(-1)

    def dequantize(self) -> NDArray[np.float32]:
        """Return ``values * scale`` as float32 (exact products in float64, one final rounding)."""
        return dequantize(self.values, self.scale)


def dequantize(values: ArrayLike, scale: ArrayLike) -> NDArray[np.float32]:
    """Return ``values * scale`` rounded once to float32."""
    return (np.asarray(values, np.float64) * np.asarray(scale, np.float64)).astype(np.float32)


def quantize(
    x: ArrayLike,
    *,
    axis: int | None = None,
    q: int = 8,
    rounding: Rounding = "nearest",
    seed: int | np.random.Generator | None = None,
    scale: ArrayLike | None = None,
) -> QTensor:
    """Quantize ``x`` symmetrically to ``q`` bits with one scale per tensor or per ``axis`` index.

    Parameters
    ----------
    x : real tensor (any shape; the LoRA layer uses matrices).
    axis : None for per-tensor scales, else the axis that keeps one scale per index.
    q : bit width, 2 to 16.
    rounding : ``"nearest"`` (ties to even) or ``"stochastic"`` (needs ``seed``).
    seed : int or ``np.random.Generator`` for stochastic rounding; ignored for nearest.
    scale : use these scales instead of computing them from ``x`` (values then saturate).

    Raises
    ------
    ValueError
        ``q`` out of range, unknown rounding, stochastic rounding without seed, NaN or infinity
        in ``x``, a bad axis, or non-positive / non-finite given scales.
    """
    bits = check_bits(q)
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, not {rounding!r}")
    arr = _as_float(x)
    _reduce_axes(arr.ndim, axis)
    if scale is None:
        s = compute_scale(arr, axis=axis, q=bits)
    else:
        s = np.asarray(scale, dtype=np.float32)
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError("given scales must be positive and finite")
        expected = np.shape(compute_scale(arr, axis=axis, q=bits))
        if s.size == 1 and axis is None:
            s = s.reshape(expected)
        if s.shape != expected:
            raise ValueError(f"given scales have shape {s.shape}, expected {expected}")
    top = qmax(bits)
    v = _round(arr.astype(np.float64) / s.astype(np.float64), rounding, seed)
    ints = np.clip(v, -top, top).astype(_storage_dtype(bits))
    if axis is not None:
        axis = operator.index(axis) % arr.ndim
    return QTensor(values=ints, scale=s, axis=axis, q=bits)
