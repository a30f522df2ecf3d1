"""The quantized LoRA layer: the GEMM program as data, exact INT32 results, bounded error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdm_qta.golden.gemm import gemm
from cdm_qta.golden.lora import (
    GemmOp,
    Phase,
    ScaleAxis,
    gemm_error_bound,
    lora_fp32,
    lora_gemms,
    lora_quantized,
    rel_error,
)

SEED = 4242


def layer(seed: int, n: int = 24, d_in: int = 40, d_out: int = 32, r: int = 4):
    print(f"random LoRA layer: seed {seed}, n={n} d_in={d_in} d_out={d_out} r={r}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    w = (rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)).astype(np.float32)
    a = (rng.standard_normal((d_in, r)) / np.sqrt(d_in)).astype(np.float32)
    b = (rng.standard_normal((d_out, r)) * 0.1).astype(np.float32)
    dy = rng.standard_normal((n, d_out)).astype(np.float32) * 1e-3
    return x, w, a, b, dy


def test_program_is_typed_data() -> None:
    prog = lora_gemms(n=77, d_in=768, d_out=320, rank=4)
    assert [g.name for g in prog] == [
        "fwd_base", "fwd_down", "fwd_up", "bwd_dh", "bwd_dx_base", "bwd_dx_down",
        "wgrad_a", "wgrad_b",
    ]  # fmt: skip
    by = {g.name: g for g in prog}
    assert (by["fwd_base"].m, by["fwd_base"].k, by["fwd_base"].n) == (77, 768, 320)
    assert by["fwd_up"].trans_b and by["fwd_up"].accumulate
    assert by["wgrad_a"].trans_a and (by["wgrad_a"].m, by["wgrad_a"].k) == (768, 77)
    # Scales never lie along the reduction axis.
    for g in prog:
        assert g.a_scale in (ScaleAxis.TENSOR, ScaleAxis.M)
        assert g.b_scale in (ScaleAxis.TENSOR, ScaleAxis.N)
    # Weights are per tensor, everything else per channel.
    for g in prog:
        for name, scale in ((g.a, g.a_scale), (g.b, g.b_scale)):
            assert (scale is ScaleAxis.TENSOR) == (name in {"W", "A", "B"}), (g.name, name)
    assert {g.phase for g in prog} == set(Phase)
    assert sum(g.macs for g in prog) == 77 * 4 * (768 + 320) * 3 + 77 * 768 * 320 * 2
    text = json.dumps([g.to_dict() for g in prog])
    assert tuple(GemmOp.from_dict(d) for d in json.loads(text)) == prog
    no_dx = lora_gemms(n=77, d_in=768, d_out=320, rank=4, need_dx=False)
    assert [g.name for g in no_dx] == [
        "fwd_base",
        "fwd_down",
        "fwd_up",
        "bwd_dh",
        "wgrad_a",
        "wgrad_b",
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 4, "d_in": 8, "d_out": 6, "rank": 7}, "rank 7 is larger than the layer"),
        ({"n": 0, "d_in": 8, "d_out": 6, "rank": 2}, "n must be a positive integer"),
        ({"n": 4, "d_in": 8, "d_out": 6, "rank": True}, "rank must be a positive integer"),
    ],
)
def test_program_rejects_bad_shapes(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lora_gemms(**kwargs)


def test_fp32_reference_is_the_gradient() -> None:
    # Y is linear in each of X, A, B, so <grad, E> equals <Y(T + E) - Y(T), dY> exactly.
    x, w, a, b, dy = layer(SEED)
    ref = lora_fp32(x, w, a, b, dy)
    rng = np.random.default_rng(SEED + 1)
    for name, grad in (("X", ref.dX), ("A", ref.dA), ("B", ref.dB)):
        args = {"X": x, "A": a, "B": b}
        e = rng.standard_normal(args[name].shape)
        args64 = {k: v.astype(np.float64) for k, v in args.items()}
        base = args64["X"] @ w @ np.eye(w.shape[1]) + args64["X"] @ args64["A"] @ args64["B"].T
        args64[name] = args64[name] + e
        moved = args64["X"] @ w + args64["X"] @ args64["A"] @ args64["B"].T
        want = float(np.sum((moved - base) * dy))
        assert float(np.sum(grad * e)) == pytest.approx(want, rel=1e-4), name


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_every_gemm_is_exact_integer_arithmetic(seed: int) -> None:
    x, w, a, b, dy = layer(seed)
    res = lora_quantized(x, w, a, b, dy)
    assert len(res.runs) == 8
    for run in res.runs:
        op = run.op
        av = run.a_q.values.astype(np.int64)
        bv = run.b_q.values.astype(np.int64)
        av = av.T if op.trans_a else av
        bv = bv.T if op.trans_b else bv
        want = np.einsum("mk,kn->mn", av, bv, dtype=np.int64)  # independent of golden.gemm
        assert np.array_equal(run.acc, want), op.name
        assert run.a_q.values.dtype == np.int8 and run.b_q.values.dtype == np.int8
        deq = (want * run.a_scale[:, None].astype(np.float64) * run.b_scale[None, :]).astype(
            np.float32
        )
        assert np.array_equal(run.result, deq), op.name


def test_single_gemm_error_within_analytic_bound() -> None:
    x, w, a, b, dy = layer(SEED)
    res = lora_quantized(x, w, a, b, dy)
    env = {"X": x, "W": w, "A": a, "B": b, "dY": dy, "H": res.H, "dH": res.dH}
    for run in res.runs:
        op = run.op
        ra = env[op.a].T if op.trans_a else env[op.a]
        rb = env[op.b].T if op.trans_b else env[op.b]
        sa = run.a_q.scale.T if op.trans_a else run.a_q.scale
        sb = run.b_q.scale.T if op.trans_b else run.b_q.scale
        exact = ra.astype(np.float64) @ rb.astype(np.float64)
        bound = gemm_error_bound(ra, rb, sa, sb)
        slack = 1e-5 * (np.abs(ra.astype(np.float64)) @ np.abs(rb.astype(np.float64))) + 1e-30
        assert np.all(np.abs(run.result - exact) <= bound + slack), op.name


def test_quantized_layer_close_to_fp32_on_random_data() -> None:
    x, w, a, b, dy = layer(SEED, n=64, d_in=96, d_out=80, r=4)
    ref, res = lora_fp32(x, w, a, b, dy), lora_quantized(x, w, a, b, dy)
    for name in ("Y", "dX", "dA", "dB"):
        err = rel_error(getattr(res, name), getattr(ref, name))
        print(f"{name}: relative error {err:.4f}")
        assert err < 0.03, name


def test_stochastic_rounding_is_reproducible() -> None:
    x, w, a, b, dy = layer(SEED)
    r1 = lora_quantized(x, w, a, b, dy, rounding="stochastic", seed=9)
    r2 = lora_quantized(x, w, a, b, dy, rounding="stochastic", seed=9)
    r3 = lora_quantized(x, w, a, b, dy, rounding="stochastic", seed=10)
    assert all(np.array_equal(p.acc, q.acc) for p, q in zip(r1.runs, r2.runs, strict=True))
    assert not np.array_equal(r1.dA, r3.dA)
    with pytest.raises(ValueError, match="needs a seed"):
        lora_quantized(x, w, a, b, dy, rounding="stochastic")


@pytest.mark.parametrize("q", [4, 12, 16])
def test_other_bit_widths(q: int) -> None:
    x, w, a, b, dy = layer(SEED)
    acc_bits = 64 if q == 16 else 32
    res = lora_quantized(x, w, a, b, dy, q=q, need_dx=False, acc_bits=acc_bits)
    assert res.dX is None
    top = 2 ** (q - 1) - 1
    assert all(np.abs(r.a_q.values).max() == top for r in res.runs)
    err = rel_error(res.Y, lora_fp32(x, w, a, b, dy).Y)
    assert err < (0.3 if q == 4 else 1e-3)


def test_shape_mismatch_is_rejected() -> None:
    x, w, a, b, dy = layer(SEED)
    with pytest.raises(ValueError, match="B must be"):
        lora_quantized(x, w, a, b.T, dy)
    with pytest.raises(ValueError, match="q must be"):
        lora_quantized(x, w, a, b, dy, q=17)
    with pytest.raises(ValueError, match="can overflow the 32-bit accumulator"):
        lora_quantized(x, w, a, b, dy, q=16)


def test_an_executor_sees_the_stored_int8_operands_and_must_match_golden() -> None:
    """The hook the accelerator's back ends use: every GEMM leaves as INT8, comes back INT32."""
    x, w, a, b, dy = layer(5)
    seen = []

    def executor(op, qa, qb):  # type: ignore[no-untyped-def]
        assert qa.dtype == np.int8 and qb.dtype == np.int8
        seen.append(op.name)
        return gemm(qa.T if op.trans_a else qa, qb.T if op.trans_b else qb)

    ref = lora_quantized(x, w, a, b, dy)
    got = lora_quantized(x, w, a, b, dy, executor=executor)
    assert seen == [op.name for op in ref.program]
    for name in ("Y", "dA", "dB", "dX"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))

    def wrong(op, qa, qb):  # type: ignore[no-untyped-def]
        return np.zeros((op.m + 1, op.n))

    with pytest.raises(ValueError, match="the executor returned"):
        lora_quantized(x, w, a, b, dy, executor=wrong)


#: The scale shape every operand must have, per GEMM, for a layer of n tokens, d_in inputs,
#: d_out outputs and rank r: written out here, independently of GemmOp.a_axis/b_axis.
def expected_scale_shapes(n: int, d_in: int, d_out: int, r: int) -> dict[str, tuple]:
    token, tensor = (n, 1), (1, 1)
    return {
        "fwd_base": (token, tensor),  # X per token, W per tensor
        "fwd_down": (token, tensor),  # X per token, A per tensor
        "fwd_up": (token, tensor),  # H per token, B per tensor
        "bwd_dh": (token, tensor),  # dY per token, B per tensor
        "bwd_dx_base": (token, tensor),  # dY per token, W per tensor
        "bwd_dx_down": (token, tensor),  # dH per token, A per tensor
        "wgrad_a": ((1, d_in), (1, r)),  # X per input channel, dH per rank column
        "wgrad_b": ((1, d_out), (1, r)),  # dY per output channel, H per rank column
    }


def test_every_gemm_quantizes_along_its_documented_axis() -> None:
    n, d_in, d_out, r = 24, 40, 32, 4
    res = lora_quantized(*layer(SEED, n, d_in, d_out, r))
    want = expected_scale_shapes(n, d_in, d_out, r)
    assert [run.op.name for run in res.runs] == list(want)
    for run in res.runs:
        got = (run.a_q.scale.shape, run.b_q.scale.shape)
        assert got == want[run.op.name], (run.op.name, got)


def test_the_wrong_axis_loses_the_small_channels() -> None:
    """Tokens (rows of X, dY) and output channels (columns of dY) spanning six orders of
    magnitude: per-token / per-channel scales keep the small ones accurate, a per-tensor scale
    would round them all to zero. Quantize along the wrong axis and this test fails."""
    x, w, a, b, dy = layer(SEED + 1)
    n, d_out = dy.shape
    token_mag = np.logspace(-3, 3, n, dtype=np.float32)[:, None]
    channel_mag = np.logspace(-3, 3, d_out, dtype=np.float32)[None, :]
    x, dy = x * token_mag, dy * token_mag * channel_mag
    ref = lora_fp32(x, w, a, b, dy)
    res = lora_quantized(x, w, a, b, dy)
    small_tokens = slice(0, n // 4)  # magnitudes 1e-3 .. ~3e-2
    assert rel_error(res.Y[small_tokens], ref.Y[small_tokens]) < 0.02
    small_channels = slice(0, d_out // 4)  # rows of dB for the smallest output channels
    assert rel_error(res.dB[small_channels], ref.dB[small_channels]) < 0.04
