"""The quantizer's contract: Eq. 2 scales, ties to even, saturation, zeros, seeded rounding."""

from __future__ import annotations

import numpy as np
import pytest

from cdm_qta.golden.quant import compute_scale, dequantize, qmax, quantize

SEED = 20260
BAD_BITS = [0, 1, 17, 32, -8, 8.0, "8", True, None]


def rng_for(test: str) -> np.random.Generator:
    print(f"{test}: seed {SEED}")
    return np.random.default_rng(SEED)


@pytest.mark.parametrize("q", range(2, 17))
def test_scale_and_range_follow_eq2(q: int) -> None:
    rng = rng_for("test_scale_and_range_follow_eq2")
    x = rng.standard_normal((7, 9)).astype(np.float32) * 3
    t = quantize(x, q=q)
    top = 2 ** (q - 1) - 1
    assert qmax(q) == top
    assert t.scale.dtype == np.float32 and t.scale.shape == (1, 1)
    assert t.scale.item() == np.float32(np.float32(np.abs(x).max()) / np.float32(top))
    assert t.values.dtype == (np.int8 if q <= 8 else np.int16)
    assert np.abs(t.values).max() == top  # Xmax lands on the top code
    # Nearest rounding: error at most half a step.
    assert np.all(np.abs(t.dequantize() - x) <= t.scale / 2 * (1 + 1e-6))


@pytest.mark.parametrize("q", BAD_BITS)
def test_bad_bit_widths_are_rejected(q: object) -> None:
    with pytest.raises(ValueError, match=r"q must be (between 2 and 16|an integer), not "):
        quantize(np.ones(3), q=q)  # type: ignore[arg-type]


def test_ties_round_to_even_and_saturate() -> None:
    s = np.float32(1.0)
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 200.0, -200.0], np.float32)
    t = quantize(x, scale=s)
    assert t.values.tolist() == [0, 2, 2, 0, -2, -2, 126, 127, -127]
    # -128 is never produced: the grid is symmetric.
    assert quantize(np.array([-1.0, 1.0]), q=8).values.tolist() == [-127, 127]


def test_per_channel_axes() -> None:
    rng = rng_for("test_per_channel_axes")
    x = rng.standard_normal((5, 6)).astype(np.float32)
    rows, cols = quantize(x, axis=0), quantize(x, axis=1)
    assert rows.scale.shape == (5, 1) and cols.scale.shape == (1, 6)
    assert np.allclose(rows.scale[:, 0], np.abs(x).max(axis=1) / 127)
    assert np.allclose(cols.scale[0], np.abs(x).max(axis=0) / 127)
    assert np.all(np.abs(rows.values).max(axis=1) == 127)
    assert np.all(np.abs(cols.values).max(axis=0) == 127)
    assert quantize(x, axis=-1).axis == 1
    with pytest.raises(ValueError, match="out of range"):
        quantize(x, axis=2)


def test_zero_tensor_and_zero_channel() -> None:
    x = np.zeros((3, 4), np.float32)
    x[1] = [1.0, -2.0, 0.5, 0.0]
    with np.errstate(all="raise"):  # any division by zero or NaN would raise here
        for axis in (None, 0, 1):
            t = quantize(x, axis=axis)
            assert np.all(np.isfinite(t.scale)) and np.all(t.scale > 0)
            assert not np.any(np.isnan(t.dequantize()))
        rows = quantize(x, axis=0)
        assert rows.scale[0, 0] == 1.0 and rows.scale[2, 0] == 1.0
        assert np.all(rows.values[[0, 2]] == 0)
        assert np.all(quantize(np.zeros(5)).dequantize() == 0)
        assert np.all(compute_scale(np.full(3, 1e-45, np.float32)) > 0)


def test_non_finite_inputs_are_rejected() -> None:
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN or infinity"):
            quantize(np.array([1.0, bad]))
    with pytest.raises(ValueError, match="positive and finite"):
        quantize(np.ones(3), scale=0.0)


def test_stochastic_rounding_is_seeded_and_unbiased() -> None:
    rng = rng_for("test_stochastic_rounding_is_seeded_and_unbiased")
    x = rng.uniform(-1, 1, size=20000).astype(np.float32)
    a = quantize(x, rounding="stochastic", seed=7)
    b = quantize(x, rounding="stochastic", seed=7)
    c = quantize(x, rounding="stochastic", seed=8)
    assert np.array_equal(a.values, b.values) and not np.array_equal(a.values, c.values)
    err = a.dequantize().astype(np.float64) - x
    assert np.all(np.abs(err) < a.scale.item() * (1 + 1e-6))
    # Unbiased: the mean error is far below the half-step bias nearest rounding could have.
    assert abs(err.mean()) < 0.02 * a.scale.item()
    with pytest.raises(ValueError, match="needs a seed"):
        quantize(x, rounding="stochastic")
    with pytest.raises(ValueError, match="rounding must be"):
        quantize(x, rounding="up")  # type: ignore[arg-type]


def test_dequantize_is_one_rounding() -> None:
    v = np.array([[127, -127, 3]], np.int8)
    s = np.array([[0.1]], np.float32)
    want = (v.astype(np.float64) * np.float64(s[0, 0])).astype(np.float32)
    assert np.array_equal(dequantize(v, s), want)
