"""The fully quantized LoRA linear for torch: its GEMMs are ``golden.lora``'s program.

:class:`Int8LoraFunction` is a ``torch.autograd.Function`` for ``Y = X W + X A B^T`` (paper
Eq. 1). Its forward runs the forward GemmOps of :func:`cdm_qta.golden.lora.lora_gemms`
(``fwd_base``, ``fwd_down``, ``fwd_up``) and its backward the others (``bwd_dh``, the two ``dX``
GEMMs when the input needs a gradient, ``wgrad_a``, ``wgrad_b``), each through
:func:`~cdm_qta.golden.lora.run_program` with an executor that sends the INT8 GEMM to the
accelerator (:class:`~cdm_qta.sw.train.offload.Accelerator`). So the records in ``golden/lora.py``
are the one definition of what runs; quantization (per-tensor weights, per-channel activations and
gradients, paper Eq. 2) and dequantization stay in golden, and the back end only sees integers.

The LoRA parameters themselves stay FP32 *master weights* in peft's modules (and the optimizer
state with them), as mixed-precision training keeps them: only the GEMMs are INT8.

:func:`int8_lora` swaps every peft LoRA layer of a UNet (its ``attn2.to_k``/``attn2.to_v``) for an
:class:`Int8LoraLinear` wrapper while the ``with`` block runs and puts the peft layers back
afterwards, so nothing else in the model changes, the state dict keeps peft's names and peft's own
FP32 path remains the reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from cdm_qta.golden.lora import GemmOp, Phase, lora_gemms, run_program
from cdm_qta.golden.quant import Rounding

from .offload import Accelerator

__all__ = ["Int8LoraFunction", "Int8LoraLinear", "int8_lora", "lora_layers"]


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


class Int8LoraFunction(torch.autograd.Function):
    """``Y = X W + X A B^T`` with every GEMM in INT8 on the accelerator (see the module)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        layer: Int8LoraLinear,
    ) -> torch.Tensor:
        # torch layouts -> the paper's: W = weight^T (d_in, d_out), A = lora_A^T (d_in, r),
        # B = lora_B (d_out, r); X is (tokens, d_in).
        tensors = {"X": _np(x), "W": _np(weight).T, "A": _np(lora_a).T, "B": _np(lora_b)}
        n, d_in = tensors["X"].shape
        program = lora_gemms(
            n=n,
            d_in=d_in,
            d_out=weight.shape[0],
            rank=lora_a.shape[0],
            need_dx=bool(ctx.needs_input_grad[0]),
        )
        forward = [op for op in program if op.phase is Phase.FORWARD]
        env, _ = run_program(forward, tensors, executor=layer.executor)
        ctx.layer = layer
        ctx.backward_ops = [op for op in program if op.phase is not Phase.FORWARD]
        ctx.tensors = {**tensors, "H": env["H"]}
        return torch.from_numpy(env["Y"])

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        layer: Int8LoraLinear = ctx.layer
        ops: list[GemmOp] = ctx.backward_ops
        env, _ = run_program(
            ops,
            {**ctx.tensors, "dY": _np(grad_y)},
            rounding=layer.grad_rounding,
            seed=layer.next_seed(),
            executor=layer.executor,
        )
        dx = torch.from_numpy(env["dX"]) if "dX" in env else None
        da = torch.from_numpy(np.ascontiguousarray(env["dA"].T))
        return dx, None, da, torch.from_numpy(env["dB"]), None


class Int8LoraLinear(nn.Module):
    """Stands in for one peft ``lora.Linear`` and runs it with :class:`Int8LoraFunction`.

    Raises
    ------
    ValueError
        The peft layer is not the paper's plain LoRA: several adapters, a scaling other than 1
        (``lora_alpha`` must equal ``r``), dropout, or a base layer with a bias.
    """

    def __init__(
        self,
        peft_layer: nn.Module,
        name: str,
        accelerator: Accelerator,
        *,
        grad_rounding: Rounding = "nearest",
        seed: int = 0,
    ) -> None:
        super().__init__()
        adapters = list(peft_layer.lora_A.keys())
        if len(adapters) != 1:
            raise ValueError(f"{name}: expected one LoRA adapter, found {adapters}")
        (adapter,) = adapters
        if float(peft_layer.scaling[adapter]) != 1.0:
            raise ValueError(f"{name}: the INT8 layer needs lora_alpha == r (scaling 1)")
        if not isinstance(peft_layer.lora_dropout[adapter], nn.Identity):
            raise ValueError(f"{name}: the INT8 layer has no LoRA dropout")
        if peft_layer.base_layer.bias is not None:
            raise ValueError(f"{name}: the INT8 layer has no bias (to_k/to_v have none)")
        self.peft_layer = peft_layer
        self.adapter = adapter
        self.layer_name = name
        self.executor = accelerator.executor(name)
        self.grad_rounding: Rounding = grad_rounding
        self._seed = seed
        self._calls = 0

    def next_seed(self) -> int:
        """A fresh stochastic-rounding seed per backward call, reproducible from ``seed``."""
        self._calls += 1
        state = np.random.SeedSequence([self._seed, self._calls]).generate_state(1)
        return int(state[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        p = self.peft_layer
        y = Int8LoraFunction.apply(
            x.reshape(-1, x.shape[-1]),
            p.base_layer.weight,
            p.lora_A[self.adapter].weight,
            p.lora_B[self.adapter].weight,
            self,
        )
        return y.reshape(*lead, y.shape[-1])


def lora_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """The peft LoRA layers of ``unet`` by module name (those with a ``lora_A``)."""
    return {n: m for n, m in unet.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}


@contextlib.contextmanager
def int8_lora(
    unet: nn.Module,
    accelerator: Accelerator,
    *,
    grad_rounding: Rounding = "nearest",
    seed: int = 0,
) -> Iterator[dict[str, Int8LoraLinear]]:
    """Swap every peft LoRA layer for an :class:`Int8LoraLinear` while the block runs."""
    layers = lora_layers(unet)
    if not layers:
        raise ValueError("the UNet has no LoRA layers to quantize")
    swapped: dict[str, Int8LoraLinear] = {}
    try:
        for i, (name, layer) in enumerate(layers.items()):
            parent_name, _, child = name.rpartition(".")
            wrapper = Int8LoraLinear(
                layer, name, accelerator, grad_rounding=grad_rounding, seed=seed * 1000 + i
            )
            setattr(unet.get_submodule(parent_name), child, wrapper)
            swapped[name] = wrapper
        yield swapped
    finally:
        for name in swapped:
            parent_name, _, child = name.rpartition(".")
            setattr(unet.get_submodule(parent_name), child, layers[name])
