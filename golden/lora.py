"""The LoRA linear layer ``Y = X W + X A B^T`` (paper Eq. 1) in FP32 and fully quantized INT8.

Shapes follow the paper: ``X`` is (n, d_in), the frozen ``W`` is (d_in, d_out), ``A`` is
(d_in, r), ``B`` is (d_out, r). With peft, ``W = base.weight.T``, ``A = lora_A.weight.T`` and
``B = lora_B.weight`` (and ``lora_alpha = r`` so that peft's scaling is 1). ``H = X A`` is the
(n, r) bottleneck; ``dY`` arrives from the next layer.

The quantized layer is a *program*: a tuple of :class:`GemmOp`, one per INT8 GEMM, each with its
shapes, operands, transpositions and scale axes. The software hands exactly this list to the
accelerator, and a scheduler or cycle model reads the same records (``qta trace`` writes the
same field names: ``m``, ``k``, ``n``, ``count``, ``phase``). Every GEMM follows
:func:`cdm_qta.golden.gemm`'s convention ``C[m x n] = op(A)[m x k] . op(B)[k x n]`` with
``op(T) = T^T`` when ``trans_a`` / ``trans_b`` is set; operands are stored untransposed, as they
sit in memory, and the accelerator's software handles ``A^T B`` and ``A B^T``.

Where the scales go
-------------------
An INT32 result dequantizes exactly, with the scales outside the sum, only when every scale is
constant along the reduction axis k: ``sum_k (s_i a_ik)(t_j b_kj) = s_i t_j sum_k a_ik b_kj``. So
``op(A)`` may have one scale per row (per m) and ``op(B)`` one per column (per n), or one per
tensor. Weights (W, A, B) are per-tensor, as in the paper; activations and gradients take the
only per-channel axis the GEMM leaves free. A tensor used by several GEMMs is therefore quantized
once per axis it needs (X per token for the forward, per input channel for dA):

===========  ===========  ===============  ================  ==================  ============
GEMM         phase        C = op(A) op(B)  m, k, n           op(A) scale         op(B) scale
===========  ===========  ===============  ================  ==================  ============
fwd_base     forward      Y  = X W         n, d_in, d_out    X per token          W tensor
fwd_down     forward      H  = X A         n, d_in, r        X per token          A tensor
fwd_up       forward      Y += H B^T       n, r, d_out       H per token          B tensor
bwd_dh       input_grad   dH = dY B        n, d_out, r       dY per token         B tensor
bwd_dx_base  input_grad   dX = dY W^T      n, d_out, d_in    dY per token         W tensor
bwd_dx_down  input_grad   dX += dH A^T     n, r, d_in        dH per token         A tensor
wgrad_a      weight_grad  dA = X^T dH      d_in, n, r        X per in-channel     dH per rank
wgrad_b      weight_grad  dB = dY^T H      d_out, n, r       dY per out-channel   H per rank
===========  ===========  ===============  ================  ==================  ============

"Per token" is one scale per row of the stored (n, .) tensor, "per in-channel" one per column
of ``X`` (d_in), "per out-channel" one per column of ``dY`` (d_out), "per rank" one per column
of ``H`` or ``dH`` (r). A weight-gradient GEMM reduces over tokens, so there the activations and
gradients are quantized per feature channel, the paper's "per-channel/per-column" scheme;
GEMMs that reduce over features can only take per-token scales.

``bwd_dh`` is needed by both ``dX`` and ``dA``; the two ``dX`` GEMMs are left out when the
layer's input needs no gradient (``need_dx=False``: the cross-attention key/value projections
read the text embedding, which a frozen text encoder does not differentiate). Every dequantized
result is FP32 (``acc * s_a[:, None] * s_b[None, :]``, float64 products rounded once); ``+=``
adds two dequantized FP32 results, because their scales differ and INT32 sums cannot be mixed.
Intermediate tensors (``H``, ``dH``) are requantized from FP32 before the next GEMM, so every
GEMM reads INT8 on both sides: the training step is fully quantized.

Error bound
-----------
With nearest rounding each element of a quantized operand is off by at most half its scale, so
one GEMM's dequantized result obeys, element by element (:func:`gemm_error_bound`),
``|C_q - C| <= |A| (t/2) + (s/2) |B| + k s t / 4`` (plus float32 rounding of the result), with
``A, B`` the real operands and ``s, t`` their broadcast scales. Chained GEMMs (through the
requantized ``H`` and ``dH``) compound; on the real vectors in ``golden/vectors`` the relative
Frobenius errors against FP32 stay below :data:`REL_ERROR_BOUND` (measured figures are in the
vectors' metadata and in the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cdm_qta.hw.checks import check_positive

from .gemm import gemm, max_safe_reduction
from .quant import QTensor, Rounding, quantize

__all__ = [
    "REL_ERROR_BOUND",
    "GemmExecutor",
    "GemmOp",
    "GemmRun",
    "LoraFP32",
    "LoraQuantized",
    "Phase",
    "ScaleAxis",
    "gemm_error_bound",
    "lora_fp32",
    "lora_gemms",
    "lora_quantized",
    "rel_error",
    "run_program",
]

#: Relative Frobenius error (``||q - ref|| / ||ref||``) of the INT8 layer against torch's FP32
#: that the tests accept on the real vectors, per output. Measured on the committed vectors
#: (q = 8, nearest): Y 0.67-0.80 %, dX 0.64-0.84 %, dA 0.11-1.01 %, dB 0.25-1.60 %; the bounds
#: leave a margin of about 2.5x for regenerated vectors.
REL_ERROR_BOUND: Mapping[str, float] = {"Y": 0.02, "dX": 0.02, "dA": 0.03, "dB": 0.04}


class Phase(StrEnum):
    """Which pass of a training step a GEMM belongs to."""

    FORWARD = "forward"
    INPUT_GRAD = "input_grad"
    WEIGHT_GRAD = "weight_grad"


class ScaleAxis(StrEnum):
    """Scale granularity of a GEMM operand, in GEMM terms (op(A) per m, op(B) per n)."""

    TENSOR = "tensor"
    M = "m"
    N = "n"


@dataclass(frozen=True)
class GemmOp:
    """One INT8 GEMM ``out (+)= dequant(op(a) @ op(b))``; what the accelerator is asked to run.

    Members
    -------
    name : unique name within the program (``"fwd_base"``).
    phase : :class:`Phase`.
    m, k, n : ``op(a)`` is (m, k), ``op(b)`` is (k, n), the result (m, n).
    a, b : names of the real tensors the operands are quantized from, stored untransposed.
    trans_a, trans_b : the operand enters the GEMM transposed.
    a_scale : ``TENSOR`` or ``M`` (one scale per row of ``op(a)``).
    b_scale : ``TENSOR`` or ``N`` (one scale per column of ``op(b)``).
    out : name of the FP32 result; ``accumulate`` adds to an existing ``out`` instead.
    count : number of identical independent GEMMs (batch x heads); 1 for a LoRA layer.
    """

    name: str
    phase: Phase
    m: int
    k: int
    n: int
    a: str
    b: str
    trans_a: bool
    trans_b: bool
    a_scale: ScaleAxis
    b_scale: ScaleAxis
    out: str
    accumulate: bool = False
    count: int = 1

    def __post_init__(self) -> None:
        for field in ("m", "k", "n", "count"):
            check_positive(field, getattr(self, field))
        if ScaleAxis(self.a_scale) not in (ScaleAxis.TENSOR, ScaleAxis.M):
            raise ValueError(f"a_scale must be 'tensor' or 'm', not {self.a_scale!r}")
        if ScaleAxis(self.b_scale) not in (ScaleAxis.TENSOR, ScaleAxis.N):
            raise ValueError(f"b_scale must be 'tensor' or 'n', not {self.b_scale!r}")
        object.__setattr__(self, "phase", Phase(self.phase))
        object.__setattr__(self, "a_scale", ScaleAxis(self.a_scale))
        object.__setattr__(self, "b_scale", ScaleAxis(self.b_scale))

    @property
    def macs(self) -> int:
        """Multiply-accumulates: ``count * m * k * n``."""
        return self.count * self.m * self.k * self.n

    @property
    def a_axis(self) -> int | None:
        """Axis of the *stored* ``a`` that keeps one scale per index (None: per tensor)."""
        if self.a_scale is ScaleAxis.TENSOR:
            return None
        return 1 if self.trans_a else 0

    @property
    def b_axis(self) -> int | None:
        """Axis of the *stored* ``b`` that keeps one scale per index (None: per tensor)."""
        if self.b_scale is ScaleAxis.TENSOR:
            return None
        return 0 if self.trans_b else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (enums as strings)."""
        d = asdict(self)
        d.update(phase=str(self.phase), a_scale=str(self.a_scale), b_scale=str(self.b_scale))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GemmOp:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(d))


def lora_gemms(
    *, n: int, d_in: int, d_out: int, rank: int, need_dx: bool = True
) -> tuple[GemmOp, ...]:
    """Return the INT8 GEMM program of one LoRA training step, in a valid execution order.

    Raises
    ------
    ValueError
        A non-positive dimension, or ``rank`` larger than ``min(d_in, d_out)`` (a "low-rank"
        adapter that is not low rank is a configuration mistake).
    """
    n, d_in, d_out, r = (
        check_positive(k, v)
        for k, v in [("n", n), ("d_in", d_in), ("d_out", d_out), ("rank", rank)]
    )
    if r > min(d_in, d_out):
        raise ValueError(
            f"rank {r} is larger than the layer ({d_in} -> {d_out}); it must be at most "
            f"{min(d_in, d_out)}"
        )
    T, M, N = ScaleAxis.TENSOR, ScaleAxis.M, ScaleAxis.N
    F, IG, WG = Phase.FORWARD, Phase.INPUT_GRAD, Phase.WEIGHT_GRAD
    ops = [
        GemmOp("fwd_base", F, n, d_in, d_out, "X", "W", False, False, M, T, "Y"),
        GemmOp("fwd_down", F, n, d_in, r, "X", "A", False, False, M, T, "H"),
        GemmOp("fwd_up", F, n, r, d_out, "H", "B", False, True, M, T, "Y", accumulate=True),
        GemmOp("bwd_dh", IG, n, d_out, r, "dY", "B", False, False, M, T, "dH"),
    ]
    if need_dx:
        ops += [
            GemmOp("bwd_dx_base", IG, n, d_out, d_in, "dY", "W", False, True, M, T, "dX"),
            GemmOp(
                "bwd_dx_down", IG, n, r, d_in, "dH", "A", False, True, M, T, "dX", accumulate=True
            ),
        ]
    ops += [
        GemmOp("wgrad_a", WG, d_in, n, r, "X", "dH", True, False, M, N, "dA"),
        GemmOp("wgrad_b", WG, d_out, n, r, "dY", "H", True, False, M, N, "dB"),
    ]
    return tuple(ops)


@dataclass(frozen=True)
class LoraFP32:
    """FP32 reference of one LoRA step: forward ``Y`` (and ``H``), backward ``dH, dX, dA, dB``."""

    Y: NDArray[np.float32]
    H: NDArray[np.float32]
    dH: NDArray[np.float32]
    dX: NDArray[np.float32]
    dA: NDArray[np.float32]
    dB: NDArray[np.float32]


def _f32(name: str, x: ArrayLike, ndim: int = 2) -> NDArray[np.float32]:
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, not shape {arr.shape!r}")
    return arr.astype(np.float32, copy=False)


def _check_shapes(
    x: NDArray[np.float32],
    w: NDArray[np.float32],
    a: NDArray[np.float32],
    b: NDArray[np.float32],
    dy: NDArray[np.float32] | None,
) -> tuple[int, int, int, int]:
    n, d_in = x.shape
    if w.shape[0] != d_in:
        raise ValueError(f"W must be ({d_in}, d_out) to follow X {x.shape}, not {w.shape}")
    d_out = w.shape[1]
    if a.shape[0] != d_in:
        raise ValueError(f"A must be ({d_in}, r), not {a.shape}")
    r = a.shape[1]
    if b.shape != (d_out, r):
        raise ValueError(f"B must be ({d_out}, {r}), not {b.shape}")
    if dy is not None and dy.shape != (n, d_out):
        raise ValueError(f"dY must be ({n}, {d_out}), not {dy.shape}")
    return n, d_in, d_out, r


def lora_fp32(x: ArrayLike, w: ArrayLike, a: ArrayLike, b: ArrayLike, dy: ArrayLike) -> LoraFP32:
    """Compute the layer and its gradients in plain float32 (``W`` frozen: no ``dW``).

    ``Y = X W + (X A) B^T``; ``dH = dY B``; ``dX = dY W^T + dH A^T``; ``dA = X^T dH``;
    ``dB = dY^T H`` (the chain rule for ``Y = H B^T`` gives ``dB^T = H^T dY``).
    """
    x, w, a, b, dy = (_f32(k, v) for k, v in [("X", x), ("W", w), ("A", a), ("B", b), ("dY", dy)])
    _check_shapes(x, w, a, b, dy)
    h = x @ a
    dh = dy @ b
    return LoraFP32(Y=x @ w + h @ b.T, H=h, dH=dh, dX=dy @ w.T + dh @ a.T, dA=x.T @ dh, dB=dy.T @ h)


@dataclass(frozen=True)
class GemmRun:
    """What one GemmOp did: the INT8 operands as stored, their scales, and the INT32 result.

    ``acc`` is exactly ``gemm(op(a_q.values), op(b_q.values))``; ``result`` its dequantized FP32
    value (before any accumulation into ``op.out``).
    """

    op: GemmOp
    a_q: QTensor
    b_q: QTensor
    acc: NDArray[np.int64]
    result: NDArray[np.float32]

    @property
    def a_scale(self) -> NDArray[np.float32]:
        """One scale per row of the result (broadcast if per-tensor), shape (m,)."""
        return np.broadcast_to(self.a_q.scale_vector, (self.op.m,))

    @property
    def b_scale(self) -> NDArray[np.float32]:
        """One scale per column of the result (broadcast if per-tensor), shape (n,)."""
        return np.broadcast_to(self.b_q.scale_vector, (self.op.n,))


def _operand(q: QTensor, trans: bool) -> NDArray[np.signedinteger]:
    return q.values.T if trans else q.values


#: Runs one INT8 GEMM somewhere else (e.g. on the accelerator): ``(op, a, b) -> INT32 result``
#: with ``a`` and ``b`` the INT8 operands *as stored* (``op.trans_a``/``op.trans_b`` say how
#: they enter the product). It must return exactly what :func:`golden.gemm` returns.
GemmExecutor = Callable[["GemmOp", NDArray[np.signedinteger], NDArray[np.signedinteger]], NDArray]


def run_program(
    program: Sequence[GemmOp],
    tensors: Mapping[str, ArrayLike],
    *,
    q: int = 8,
    rounding: Rounding = "nearest",
    seed: int | None = None,
    acc_bits: int = 32,
    executor: GemmExecutor | None = None,
) -> tuple[dict[str, NDArray[np.float32]], list[GemmRun]]:
    """Execute a GEMM program on real tensors, every GEMM through :func:`golden.gemm`.

    Each (tensor, axis) pair is quantized once and reused, as the hardware would keep one INT8
    copy. With stochastic rounding, ``seed`` seeds one generator consumed in program order.
    ``executor`` sends each INT8 GEMM elsewhere (the accelerator's back ends); quantization,
    scales and dequantization stay here, so a back end only ever sees the integer GEMMs.

    Raises
    ------
    ValueError
        A GEMM whose reduction could overflow the ``acc_bits`` accumulator
        (:func:`golden.max_safe_reduction`): a wrapped sum would silently corrupt the step, so
        it is refused (q = 16 needs ``acc_bits=64``), as are inconsistent shapes.

    Returns
    -------
    The environment (inputs plus every ``out``, FP32) and one :class:`GemmRun` per GEMM.
    """
    env: dict[str, NDArray[np.float32]] = {k: _f32(k, v) for k, v in tensors.items()}
    rng = np.random.default_rng(seed) if rounding == "stochastic" and seed is not None else None
    cache: dict[tuple[str, int | None], QTensor] = {}

    def quant(name: str, axis: int | None) -> QTensor:
        if name not in env:
            raise ValueError(f"the program reads {name!r} before anything writes it")
        key = (name, axis)
        if key not in cache:
            cache[key] = quantize(env[name], axis=axis, q=q, rounding=rounding, seed=rng)
        return cache[key]

    runs: list[GemmRun] = []
    for op in program:
        if op.count != 1:
            raise ValueError(f"{op.name}: run_program executes single GEMMs, not count={op.count}")
        a_q, b_q = quant(op.a, op.a_axis), quant(op.b, op.b_axis)
        opa, opb = _operand(a_q, op.trans_a), _operand(b_q, op.trans_b)
        if opa.shape != (op.m, op.k) or opb.shape != (op.k, op.n):
            raise ValueError(
                f"{op.name}: operands are {opa.shape} and {opb.shape}, the op says "
                f"({op.m}, {op.k}) x ({op.k}, {op.n})"
            )
        limit = max_safe_reduction(operand_bits=q, acc_bits=acc_bits)
        if op.k > limit:
            raise ValueError(
                f"{op.name}: a reduction over k={op.k} can overflow the {acc_bits}-bit "
                f"accumulator with {q}-bit operands (at most {limit})"
            )
        if executor is None:
            acc = gemm(opa, opb, operand_bits=q, acc_bits=acc_bits)
        else:
            acc = np.asarray(executor(op, a_q.values, b_q.values), dtype=np.int64)
            if acc.shape != (op.m, op.n):
                raise ValueError(
                    f"{op.name}: the executor returned {acc.shape}, not {(op.m, op.n)}"
                )
        sa = a_q.scale_vector.astype(np.float64).reshape(-1, 1)
        sb = b_q.scale_vector.astype(np.float64).reshape(1, -1)
        result = (acc.astype(np.float64) * sa * sb).astype(np.float32)
        if op.accumulate:
            if op.out not in env:
                raise ValueError(f"{op.name} accumulates into {op.out!r}, which does not exist")
            env[op.out] = env[op.out] + result
        else:
            env[op.out] = result
        runs.append(GemmRun(op=op, a_q=a_q, b_q=b_q, acc=acc, result=result))
    return env, runs


@dataclass(frozen=True)
class LoraQuantized:
    """Result of the fully quantized LoRA step; ``dX`` is None when it was not asked for."""

    Y: NDArray[np.float32]
    H: NDArray[np.float32]
    dH: NDArray[np.float32]
    dX: NDArray[np.float32] | None
    dA: NDArray[np.float32]
    dB: NDArray[np.float32]
    program: tuple[GemmOp, ...]
    runs: tuple[GemmRun, ...]

    def run(self, name: str) -> GemmRun:
        """The :class:`GemmRun` of the GEMM called ``name``."""
        for r in self.runs:
            if r.op.name == name:
                return r
        raise KeyError(name)


def lora_quantized(
    x: ArrayLike,
    w: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    dy: ArrayLike,
    *,
    q: int = 8,
    rounding: Rounding = "nearest",
    seed: int | None = None,
    need_dx: bool = True,
    acc_bits: int = 32,
    executor: GemmExecutor | None = None,
) -> LoraQuantized:
    """Run the LoRA step of :func:`lora_gemms` with every GEMM in INT``q``, INT32 accumulation.

    ``q`` and ``acc_bits`` exist for studies; the accelerator is q = 8, ``acc_bits`` = 32.
    """
    x, w, a, b, dy = (_f32(k, v) for k, v in [("X", x), ("W", w), ("A", a), ("B", b), ("dY", dy)])
    n, d_in, d_out, r = _check_shapes(x, w, a, b, dy)
    program = lora_gemms(n=n, d_in=d_in, d_out=d_out, rank=r, need_dx=need_dx)
    env, runs = run_program(
        program,
        {"X": x, "W": w, "A": a, "B": b, "dY": dy},
        q=q,
        rounding=rounding,
        seed=seed,
        acc_bits=acc_bits,
        executor=executor,
    )
    return LoraQuantized(
        Y=env["Y"],
        H=env["H"],
        dH=env["dH"],
        dX=env.get("dX"),
        dA=env["dA"],
        dB=env["dB"],
        program=program,
        runs=tuple(runs),
    )


def gemm_error_bound(
    a: ArrayLike, b: ArrayLike, a_scale: ArrayLike, b_scale: ArrayLike
) -> NDArray[np.float64]:
    """Worst-case elementwise error of one nearest-rounded quantized GEMM against ``a @ b``.

    ``a`` (m, k) and ``b`` (k, n) are the real operands as they enter the GEMM; ``a_scale``
    broadcasts against ``a`` (per row or per tensor), ``b_scale`` against ``b``. With
    ``|a~ - a| <= s/2`` and ``|b~ - b| <= t/2``:
    ``|a~ b~ - a b| <= |a| t/2 + s/2 |b| + sum_k s t / 4``. Excludes float32 rounding of inputs
    and of the result, which callers add as a relative slack.
    """
    a64, b64 = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    s = np.broadcast_to(np.asarray(a_scale, np.float64), a64.shape)
    t = np.broadcast_to(np.asarray(b_scale, np.float64), b64.shape)
    return a64 @ (t / 2) + (s / 2) @ b64 + (s / 2) @ (t / 2)


def rel_error(approx: ArrayLike, ref: ArrayLike) -> float:
    """Relative Frobenius error ``||approx - ref|| / ||ref||`` (0 when both are zero)."""
    x, y = np.asarray(approx, np.float64), np.asarray(ref, np.float64)
    den = float(np.linalg.norm(y))
    num = float(np.linalg.norm(x - y))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den
