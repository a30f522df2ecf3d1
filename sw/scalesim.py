"""SCALE-Sim's closed-form cycle counts of a GEMM on a systolic array (the paper's baseline).

The paper's own simulator is "based on SCALE-Sim" (its ref. [15]): A. Samajdar, J. M. Joseph,
Y. Zhu, P. Whatmough, M. Mattina, T. Krishna, "A Systematic Methodology for Characterizing
Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020. Its analytical model counts a
GEMM ``C[M x N] = A[M x K] @ B[K x N]`` on an ``R x C`` array as a number of *folds* (tiles of
the stationary operand that fit the array), each paying the full fill, stream and drain of the
pipeline, with nothing overlapped between folds:

* **WS** (weights ``B`` stationary, a fold is ``R`` reduction rows by ``C`` output columns):
  ``ceil(K/R) * ceil(N/C) * (2R + C + M - 2)`` -- ``R`` cycles to load the weights, ``M``
  input rows streamed in, ``R + C - 2`` to skew them through and drain the last sum.
* **OS** (outputs stationary, a fold is ``R`` output rows by ``C`` output columns):
  ``ceil(M/R) * ceil(N/C) * (K + R + C - 2)`` -- ``K`` reduction steps plus ``R + C - 2`` of
  skew before the last PE has its last operand (the drain of the results is not counted).

These are *not* the cycles of this project's hardware: its array double-buffers weights (the
next WS fold's weights load while the current one streams) and drains OS results while the
next fold accumulates, so back-to-back folds overlap and only the first fill and the last
drain show (:mod:`cdm_qta.hw.timing`). The functions here exist so that ``qta perf`` can
print the baseline next to the model and explain the difference.
"""

from __future__ import annotations

from cdm_qta.hw.checks import check_positive

__all__ = ["fold_counts", "gemm_cycles", "os_cycles", "utilization", "ws_cycles"]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _shape(m: int, k: int, n: int, rows: int, cols: int) -> tuple[int, int, int, int, int]:
    return (
        check_positive("m", m),
        check_positive("k", k),
        check_positive("n", n),
        check_positive("rows", rows),
        check_positive("cols", cols),
    )


def ws_cycles(m: int, k: int, n: int, rows: int, cols: int | None = None) -> int:
    """Weight-stationary cycles: ``ceil(K/R) * ceil(N/C) * (2R + C + M - 2)``.

    Parameters
    ----------
    m, k, n : int
        GEMM ``C[m x n] = A[m x k] @ B[k x n]``.
    rows, cols : int
        Array rows ``R`` and columns ``C`` (``cols`` defaults to ``rows``).

    Raises
    ------
    ValueError
        If a dimension is not a positive integer.
    """
    m, k, n, r, c = _shape(m, k, n, rows, rows if cols is None else cols)
    return _ceil(k, r) * _ceil(n, c) * (2 * r + c + m - 2)


def os_cycles(m: int, k: int, n: int, rows: int, cols: int | None = None) -> int:
    """Output-stationary cycles: ``ceil(M/R) * ceil(N/C) * (K + R + C - 2)`` (see
    :func:`ws_cycles` for the parameters)."""
    m, k, n, r, c = _shape(m, k, n, rows, rows if cols is None else cols)
    return _ceil(m, r) * _ceil(n, c) * (k + r + c - 2)


def gemm_cycles(dataflow: str, m: int, k: int, n: int, rows: int, cols: int | None = None) -> int:
    """:func:`ws_cycles` or :func:`os_cycles` by name (``"ws"`` / ``"os"``, any case)."""
    flow = dataflow.lower()
    if flow == "ws":
        return ws_cycles(m, k, n, rows, cols)
    if flow == "os":
        return os_cycles(m, k, n, rows, cols)
    raise ValueError(f"dataflow must be ws or os, not {dataflow!r}")


def fold_counts(dataflow: str, m: int, k: int, n: int, rows: int, cols: int | None = None) -> int:
    """How many folds (tiles of the stationary operand) SCALE-Sim counts."""
    m, k, n, r, c = _shape(m, k, n, rows, rows if cols is None else cols)
    flow = dataflow.lower()
    if flow == "ws":
        return _ceil(k, r) * _ceil(n, c)
    if flow == "os":
        return _ceil(m, r) * _ceil(n, c)
    raise ValueError(f"dataflow must be ws or os, not {dataflow!r}")


def utilization(dataflow: str, m: int, k: int, n: int, rows: int, cols: int | None = None) -> float:
    """MACs / (PEs x cycles) under SCALE-Sim's count: the fraction of peak it predicts."""
    cols = rows if cols is None else cols
    cycles = gemm_cycles(dataflow, m, k, n, rows, cols)
    return m * k * n / (rows * cols * cycles)
