"""INT8 GEMM programs of the UNet's other layers, for offloading a whole training step.

The paper's Fig. 3 quantizes every GEMM of the step, not only the LoRA ones. These are the
programs of the two other kinds of layer, in the same :class:`~cdm_qta.golden.lora.GemmOp`
records as :func:`~cdm_qta.golden.lora.lora_gemms` (and run by the same
:func:`~cdm_qta.golden.lora.run_program`), with the same scale rules: weights per tensor,
activations and gradients per row or column, never along the reduction axis.

=============  ===========  ==================  ===============  ==================  ===========
program        GEMM         C = op(A) op(B)     m, k, n          op(A) scale         op(B) scale
=============  ===========  ==================  ===============  ==================  ===========
frozen linear  fwd          Y  = X W            n, d_in, d_out   X per token          W tensor
(also a conv,  bwd_dx       dX = dY W^T         n, d_out, d_in   dY per token         W tensor
im2col form)
matmul of two  fwd          C  = P Q            m, k, n          P per row            Q per column
activations    bwd_dp       dP = dC Q^T         m, n, k          dC per row           Q per row
(attention)    bwd_dq       dQ = P^T dC         k, m, n          P per column         dC per column
=============  ===========  ==================  ===============  ==================  ===========

A frozen weight gets no weight gradient (autograd skips it), so a frozen linear layer is one
forward and, when its input needs a gradient, one input-gradient GEMM. A convolution is the
frozen linear layer on its im2col matrix (``X`` = patches, ``W`` = the kernel as a matrix).
"""

from __future__ import annotations

from cdm_qta.hw.checks import check_positive

from .lora import GemmOp, Phase, ScaleAxis

__all__ = ["frozen_linear_gemms", "matmul_gemms"]


def frozen_linear_gemms(
    *, n: int, d_in: int, d_out: int, need_dx: bool = True
) -> tuple[GemmOp, ...]:
    """``Y = X W`` with ``W`` frozen: the forward GEMM and, if asked for, ``dX = dY W^T``."""
    n, d_in, d_out = (check_positive(k, v) for k, v in [("n", n), ("d_in", d_in), ("d_out", d_out)])
    T, M = ScaleAxis.TENSOR, ScaleAxis.M
    ops = [GemmOp("fwd", Phase.FORWARD, n, d_in, d_out, "X", "W", False, False, M, T, "Y")]
    if need_dx:
        ops.append(
            GemmOp("bwd_dx", Phase.INPUT_GRAD, n, d_out, d_in, "dY", "W", False, True, M, T, "dX")
        )
    return tuple(ops)


def matmul_gemms(
    *, m: int, k: int, n: int, need_dp: bool = True, need_dq: bool = True
) -> tuple[GemmOp, ...]:
    """``C = P Q`` of two activations (P (m, k), Q (k, n)) and the gradients asked for."""
    m, k, n = (check_positive(name, v) for name, v in [("m", m), ("k", k), ("n", n)])
    M, N = ScaleAxis.M, ScaleAxis.N
    IG = Phase.INPUT_GRAD
    ops = [GemmOp("fwd", Phase.FORWARD, m, k, n, "P", "Q", False, False, M, N, "C")]
    if need_dp:
        ops.append(GemmOp("bwd_dp", IG, m, n, k, "dC", "Q", False, True, M, N, "dP"))
    if need_dq:
        ops.append(GemmOp("bwd_dq", IG, k, m, n, "P", "dC", True, False, M, N, "dQ"))
    return tuple(ops)
