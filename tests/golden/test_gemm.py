"""The INT GEMM reference: exact products, INT32 wrap-around, input checks, lane packing."""

from __future__ import annotations

import numpy as np
import pytest

from cdm_qta import golden


def _python_gemm(a: np.ndarray, b: np.ndarray, acc_bits: int) -> list[list[int]]:
    """Independent reference with Python integers (unbounded), wrapped at the end."""
    m, k = a.shape
    n = b.shape[1]
    out = []
    for i in range(m):
        row = []
        for j in range(n):
            s = sum(int(a[i, t]) * int(b[t, j]) for t in range(k))
            s &= (1 << acc_bits) - 1
            row.append(s - (1 << acc_bits) if s >= 1 << (acc_bits - 1) else s)
        out.append(row)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gemm_matches_python_integers(seed: int) -> None:
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    m, k, n = (int(x) for x in rng.integers(1, 12, size=3))
    a = golden.rand_int(rng, (m, k))
    b = golden.rand_int(rng, (k, n))
    assert golden.gemm(a, b).tolist() == _python_gemm(a, b, 32)


def test_extremes_and_wraparound() -> None:
    k = golden.max_safe_reduction()
    assert k == (2**31 - 1) // 128**2 == 131071
    a = np.full((1, k), -128)
    assert golden.gemm(a, a.T)[0, 0] == k * 16384  # largest sum that cannot wrap
    a = np.full((1, k + 1), -128)
    assert golden.gemm(a, a.T)[0, 0] == (k + 1) * 16384 - 2**32  # wraps like INT32
    assert golden.gemm(np.array([[127]]), np.array([[-128]]))[0, 0] == -16256


def test_gemm_accumulate_input_wraps() -> None:
    c = np.array([[2**31 - 1]])
    assert golden.gemm(np.array([[1]]), np.array([[1]]), c=c)[0, 0] == -(2**31)


def test_small_widths() -> None:
    a = np.array([[-8, 7]])
    b = np.array([[-8], [7]])
    assert golden.gemm(a, b, operand_bits=4, acc_bits=8)[0, 0] == 113  # 64 + 49
    assert golden.gemm(a, b, operand_bits=4, acc_bits=6)[0, 0] == 113 - 128


@pytest.mark.parametrize(
    ("a", "b", "error", "match"),
    [
        (np.zeros((2, 3)), np.zeros((4, 2)), ValueError, "inner dimensions"),
        (np.zeros(3, dtype=np.int64), np.zeros((3, 2)), ValueError, "2-D"),
        (np.array([[128]]), np.array([[1]]), ValueError, "outside the signed 8-bit"),
        (np.array([[0.5]]), np.array([[1]]), TypeError, "integers"),
    ],
)
def test_bad_operands_raise(a: np.ndarray, b: np.ndarray, error: type, match: str) -> None:
    if a.dtype.kind == "f" and error is ValueError:
        a = a.astype(np.int64)
        b = b.astype(np.int64)
    with pytest.raises(error, match=match):
        golden.gemm(a, b)


def test_pack_lane_order_round_trip() -> None:
    rng = np.random.default_rng(5)
    row = golden.rand_int(rng, (7,))
    word = golden.pack(row, 8)
    assert word & 0xFF == row[0] & 0xFF  # lane 0 in the low bits
    np.testing.assert_array_equal(golden.unpack(word, 8, 7), row)
    rows = golden.rand_int(rng, (3, 5), 8)
    np.testing.assert_array_equal(golden.unpack_rows(golden.pack_rows(rows, 8), 8, 5), rows)
    assert golden.unpack(0xFF, 8, 1, signed=False)[0] == 255
