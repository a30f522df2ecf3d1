"""``--offload all``: every GEMM of the UNet's training step in INT8 on the accelerator.

The paper's Fig. 3 quantizes the whole step, frozen layers included. Under :func:`int8_everything`
the UNet runs, besides the INT8 LoRA layers of :mod:`.qlora`:

* every other ``nn.Linear`` as :class:`Int8Linear` (``golden.layers.frozen_linear_gemms``: the
  forward GEMM, and ``dX`` when the input needs a gradient; frozen weights get none);
* every ``nn.Conv2d`` as :class:`Int8Conv2d`: the same program on the im2col matrix
  (``torch.nn.functional.unfold``; autograd's ``fold`` brings ``dX`` back to an image);
* both products of every attention (``Q K^T`` and ``softmax(.) V``) through
  :class:`Int8AttnProcessor` (``golden.layers.matmul_gemms``, one GEMM per batch x head).

Biases, normalisations, softmax and activations stay FP32, as in the paper (only GEMMs are
INT8). Everything is restored when the block ends, so sampling and the saved LoRA are unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from cdm_qta.golden.layers import frozen_linear_gemms, matmul_gemms
from cdm_qta.golden.lora import GemmExecutor, Phase, run_program

from .offload import Accelerator
from .qlora import int8_lora

__all__ = ["Int8AttnProcessor", "Int8Conv2d", "Int8Linear", "int8_everything"]


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


class _FrozenLinear(torch.autograd.Function):
    """``Y = X W^T`` (torch's weight layout) with a frozen ``W``, in INT8."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, run: GemmExecutor) -> torch.Tensor:  # type: ignore[override]
        tensors = {"X": _np(x), "W": _np(weight).T}
        n, d_in = tensors["X"].shape
        program = frozen_linear_gemms(
            n=n, d_in=d_in, d_out=weight.shape[0], need_dx=bool(ctx.needs_input_grad[0])
        )
        env, _ = run_program(
            [op for op in program if op.phase is Phase.FORWARD], tensors, executor=run
        )
        ctx.rest = [op for op in program if op.phase is not Phase.FORWARD]
        ctx.tensors, ctx.run = tensors, run
        return torch.from_numpy(env["Y"])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        if not ctx.rest:
            return None, None, None
        env, _ = run_program(ctx.rest, {**ctx.tensors, "dY": _np(grad)}, executor=ctx.run)
        return torch.from_numpy(env["dX"]), None, None


class _Bmm(torch.autograd.Function):
    """Batched ``C[i] = P[i] Q[i]`` of two activations, one INT8 GEMM per batch entry."""

    @staticmethod
    def forward(ctx: Any, p: torch.Tensor, q: torch.Tensor, run: GemmExecutor) -> torch.Tensor:  # type: ignore[override]
        count, m, k = p.shape
        n = q.shape[-1]
        program = matmul_gemms(
            m=m, k=k, n=n, need_dp=bool(ctx.needs_input_grad[0]),
            need_dq=bool(ctx.needs_input_grad[1]),
        )  # fmt: skip
        forward = [op for op in program if op.phase is Phase.FORWARD]
        pn, qn = _np(p), _np(q)
        out = [
            run_program(forward, {"P": pn[i], "Q": qn[i]}, executor=run)[0]["C"]
            for i in range(count)
        ]
        ctx.rest = [op for op in program if op.phase is not Phase.FORWARD]
        ctx.arrays, ctx.run = (pn, qn), run
        return torch.from_numpy(np.stack(out))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        pn, qn = ctx.arrays
        g = _np(grad)
        envs = [
            run_program(ctx.rest, {"P": pn[i], "Q": qn[i], "dC": g[i]}, executor=ctx.run)[0]
            for i in range(len(g))
        ]
        dp = torch.from_numpy(np.stack([e["dP"] for e in envs])) if "dP" in envs[0] else None
        dq = torch.from_numpy(np.stack([e["dQ"] for e in envs])) if "dQ" in envs[0] else None
        return dp, dq, None


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` whose GEMMs run in INT8 on the accelerator (bias in FP32)."""

    def __init__(self, linear: nn.Linear, name: str, accelerator: Accelerator) -> None:
        super().__init__()
        self.linear = linear
        self.run = accelerator.executor(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _FrozenLinear.apply(x.reshape(-1, x.shape[-1]), self.linear.weight, self.run)
        if self.linear.bias is not None:
            y = y + self.linear.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


class Int8Conv2d(nn.Module):
    """A frozen ``nn.Conv2d`` as an implicit GEMM (im2col) in INT8 on the accelerator.

    Raises
    ------
    ValueError
        Grouped convolutions (none in this UNet) or non-zero padding modes.
    """

    def __init__(self, conv: nn.Conv2d, name: str, accelerator: Accelerator) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"{name}: only ungrouped, zero-padded convolutions are offloaded")
        self.conv = conv
        self.run = accelerator.executor(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        b, _, h, w = x.shape
        cols = nn.functional.unfold(x, c.kernel_size, c.dilation, c.padding, c.stride)
        ho = (h + 2 * c.padding[0] - c.dilation[0] * (c.kernel_size[0] - 1) - 1) // c.stride[0] + 1
        wo = (w + 2 * c.padding[1] - c.dilation[1] * (c.kernel_size[1] - 1) - 1) // c.stride[1] + 1
        patches = cols.transpose(1, 2).reshape(b * ho * wo, -1)
        y = _FrozenLinear.apply(patches, c.weight.reshape(c.out_channels, -1), self.run)
        if c.bias is not None:
            y = y + c.bias
        return y.reshape(b, ho * wo, -1).transpose(1, 2).reshape(b, -1, ho, wo)


class Int8AttnProcessor:
    """diffusers' classic ``AttnProcessor`` with both attention products in INT8.

    Supports what this UNet's transformer blocks use (no spatial or group norm, no mask).
    """

    def __init__(self, name: str, accelerator: Accelerator) -> None:
        self.scores = accelerator.executor(f"{name}.scores")
        self.values = accelerator.executor(f"{name}.values")

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if attention_mask is not None or attn.spatial_norm is not None or attn.group_norm:
            raise ValueError("the INT8 attention supports no mask, spatial or group norm")
        residual = hidden_states
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        query = attn.head_to_batch_dim(query)
        scores = _Bmm.apply(query, key.transpose(1, 2), self.scores) * attn.scale
        out = _Bmm.apply(scores.softmax(dim=-1), value, self.values)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def int8_everything(
    unet: nn.Module, accelerator: Accelerator, **lora_options: Any
) -> Iterator[None]:
    """Every GEMM of ``unet`` in INT8 on ``accelerator`` while the block runs."""
    with int8_lora(unet, accelerator, **lora_options) as lora:
        inside_lora = tuple(f"{n}." for n in lora)
        swaps: list[tuple[str, nn.Module]] = []
        for name, module in list(unet.named_modules()):
            if name.startswith(inside_lora) or type(module) not in (nn.Linear, nn.Conv2d):
                continue
            swaps.append((name, module))
        processors = dict(unet.attn_processors)
        try:
            for name, module in swaps:
                parent, _, child = name.rpartition(".")
                wrapper: nn.Module = (
                    Int8Linear(module, name, accelerator)
                    if isinstance(module, nn.Linear)
                    else Int8Conv2d(module, name, accelerator)
                )
                setattr(unet.get_submodule(parent), child, wrapper)
            unet.set_attn_processor(
                {
                    key: Int8AttnProcessor(key.removesuffix(".processor"), accelerator)
                    for key in processors
                }
            )
            yield
        finally:
            unet.set_attn_processor(processors)
            for name, module in swaps:
                parent, _, child = name.rpartition(".")
                setattr(unet.get_submodule(parent), child, module)
