"""``qta trace``: every GEMM of one UNet training step, as autograd really runs it.

The UNet is built from a config in code (:mod:`cdm_qta.sw.unet_configs`) on the ``meta`` device,
so nothing is downloaded and no memory is used, and one noise-prediction step (forward, MSE
loss, backward) runs under two interposers:

- a ``TorchFunctionMode`` tags every autograd node created by a torch call with the innermost
  ``nn.Module`` that made it (global forward hooks keep the module stack), and links the node
  of each GEMM to its forward record;
- a ``TorchDispatchMode`` sees the aten ops: ``mm``/``addmm`` (linear layers), ``bmm``/
  ``baddbmm`` (attention: diffusers' classic ``AttnProcessor`` is installed so that attention is
  its two batched products rather than a fused SDPA kernel), ``convolution`` and
  ``convolution_backward``. In the backward pass ``torch._C._current_autograd_node()`` says
  which forward GEMM is being differentiated; autograd differentiates the operands that need a
  gradient in argument order, so the n-th GEMM of a node is the gradient of its n-th such
  operand: the weight's gives ``weight_grad``, an activation's ``input_grad``.

Records use the same conventions and field names as :class:`cdm_qta.golden.lora.GemmOp`:
``C[m x n] = op(A)[m x k] . op(B)[k x n]`` repeated ``count`` times (batch x heads for
attention), ``phase`` in ``forward`` / ``input_grad`` / ``weight_grad``, ``trans_a``/``trans_b``
when the operand is read transposed (from the aten strides). Convolutions are implicit GEMMs in
the im2col/col2im form: forward ``cols . W^T`` (m = B Ho Wo, k = Cin kh kw / g, n = Cout / g),
input gradient ``dY . W`` into col2im (m = B Ho Wo, k = Cout / g, n = Cin kh kw / g), weight
gradient ``cols^T . dY`` (m = Cin kh kw / g, k = B Ho Wo, n = Cout / g), ``count`` = groups, so
every convolution GEMM has the MACs ``torch.utils.flop_counter`` counts.

Modes: ``full`` is Custom Diffusion's baseline (the ``attn2.to_k``/``attn2.to_v`` weights
trainable, everything else frozen); ``lora`` wraps the same projections with peft LoRA of rank
``--rank`` (``lora_alpha = rank``) and freezes everything else. GEMMs autograd skips are left
out and counted in the summary: weight gradients of frozen weights, and input gradients nobody
needs (ahead of the first trainable layer, and of the text embedding unless ``--text-grad``
says the text encoder is trained too, as with Custom Diffusion's modifier token). The VAE and
the text encoder are not part of the trace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cdm_qta.hw.checks import check_positive
from cdm_qta.hw.files import replacing

from .errors import CliError
from .unet_configs import MODELS, UNetSpec, get_model

__all__ = ["MODES", "Trace", "TraceGemm", "add_parser", "run", "trace_step"]

MODES = ("full", "lora")
TARGETS = ("attn2.to_k", "attn2.to_v")
PHASES = ("forward", "input_grad", "weight_grad")


@dataclass(frozen=True)
class TraceGemm:
    """One GEMM of the step (``count`` identical independent products of one shape).

    Members
    -------
    name : module that runs it (``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k``).
    kind : ``conv``, ``linear``, ``lora`` (the adapters' own layers) or ``attention``.
    phase : ``forward``, ``input_grad`` or ``weight_grad``.
    m, k, n, count : shapes as in ``golden.gemm``; MACs = count * m * k * n.
    trans_a, trans_b : operand read transposed.
    trainable : the layer's weight is trained (false for attention products).
    op : the aten op it came from.
    """

    name: str
    kind: str
    phase: str
    m: int
    k: int
    n: int
    count: int
    trans_a: bool
    trans_b: bool
    trainable: bool
    op: str

    @property
    def macs(self) -> int:
        return self.count * self.m * self.k * self.n

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.m, self.k, self.n, self.count)


@dataclass
class _Forward:
    """A forward GEMM and which of its two operands autograd will differentiate."""

    gemm: TraceGemm
    needs: tuple[bool, bool]
    weight_operand: int | None  # 1 for linear/conv (b is the weight), None for attention


@dataclass
class Trace:
    """The GEMMs of one training step plus what autograd skipped."""

    model: str
    mode: str
    rank: int | None
    batch: int
    resolution: int
    text_grad: bool
    gemms: list[TraceGemm] = field(default_factory=list)
    skipped: list[tuple[str, str, str, int]] = field(default_factory=list)  # name, kind, why, MACs
    trainable_parameters: int = 0

    @property
    def total_macs(self) -> int:
        return sum(g.macs for g in self.gemms)

    def summary(self) -> dict[str, Any]:
        """Totals by layer kind and phase, GEMM and shape counts, skipped work."""
        by_kind: Counter[str] = Counter()
        by_phase: Counter[str] = Counter()
        for g in self.gemms:
            by_kind[g.kind] += g.macs
            by_phase[g.phase] += g.macs
        skipped: dict[str, dict[str, int]] = defaultdict(lambda: {"gemms": 0, "macs": 0})
        for _, kind, why, macs in self.skipped:
            skipped[f"{why} ({kind})"]["gemms"] += 1
            skipped[f"{why} ({kind})"]["macs"] += macs
        return {
            "model": self.model,
            "mode": self.mode,
            "rank": self.rank,
            "batch": self.batch,
            "resolution": self.resolution,
            "text_grad": self.text_grad,
            "trainable_parameters": self.trainable_parameters,
            "total_macs": self.total_macs,
            "gemms": len(self.gemms),
            "distinct_shapes": len({g.shape for g in self.gemms}),
            "macs_by_kind": dict(sorted(by_kind.items())),
            "macs_by_phase": {p: by_phase.get(p, 0) for p in PHASES},
            "gemms_by_phase": {p: sum(g.phase == p for g in self.gemms) for p in PHASES},
            "skipped": dict(sorted(skipped.items())),
        }

    def format_summary(self, *, shapes: int = 12) -> str:
        """Human-readable summary (``qta trace --summary``)."""
        s = self.summary()
        lines = [
            f"model {self.model} ({MODELS[self.model].description}), mode {self.mode}"
            + (f", rank {self.rank}" if self.mode == "lora" else "")
            + f", batch {self.batch}, {self.resolution} px"
            + (", text encoder trained" if self.text_grad else ""),
            f"trainable parameters: {s['trainable_parameters']:,}",
            f"total MACs: {s['total_macs']:,} ({s['total_macs'] / 1e9:.2f} G)",
            f"GEMMs: {s['gemms']:,}, distinct shapes (m, k, n, count): {s['distinct_shapes']}",
            "MACs by phase:",
        ]
        for p in PHASES:
            macs = s["macs_by_phase"][p]
            lines.append(
                f"  {p:<12} {macs:>20,}  {_pct(macs, s['total_macs'])}"
                f"  ({s['gemms_by_phase'][p]} GEMMs)"
            )
        lines.append("MACs by layer kind:")
        for kind, macs in s["macs_by_kind"].items():
            lines.append(f"  {kind:<12} {macs:>20,}  {_pct(macs, s['total_macs'])}")
        lines.append("left out (autograd does not run them):")
        if not s["skipped"]:
            lines.append("  nothing")
        for why, v in s["skipped"].items():
            lines.append(f"  {why}: {v['gemms']} GEMMs, {v['macs']:,} MACs")
        counts: Counter[tuple[int, int, int, int]] = Counter(g.shape for g in self.gemms)
        macs_of = {sh: sh[0] * sh[1] * sh[2] * sh[3] for sh in counts}
        top = sorted(counts, key=lambda sh: -macs_of[sh] * counts[sh])[:shapes]
        lines.append(f"largest shapes by total MACs (of {len(counts)}):")
        for sh in top:
            lines.append(
                f"  m={sh[0]:<6} k={sh[1]:<6} n={sh[2]:<6} count={sh[3]:<4} x{counts[sh]:<4}"
                f" {_pct(macs_of[sh] * counts[sh], s['total_macs'])}"
            )
        return "\n".join(lines)

    def header(self) -> dict[str, Any]:
        """First JSONL line: what was traced, and the summary."""
        return {"record": "trace", **self.summary()}

    def write_jsonl(self, path: Path) -> None:
        """Write the trace atomically: a temporary file in the same folder, then a rename."""
        path = Path(path)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder {path.parent} does not exist")
        with replacing(path) as tmp, tmp.open("w") as f:
            f.write(json.dumps(self.header()) + "\n")
            for g in self.gemms:
                f.write(json.dumps({"record": "gemm", **asdict(g), "macs": g.macs}) + "\n")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f} %" if whole else "  -  %"


_GEMM_NODES = {
    "mm": "MmBackward0",
    "addmm": "AddmmBackward0",
    "bmm": "BmmBackward0",
    "baddbmm": "BaddbmmBackward0",
    "convolution": "ConvolutionBackward0",
}


def _transposed(t: Any) -> bool:
    """An operand is read transposed when its last two dims are column-major in memory."""
    return t.dim() >= 2 and t.shape[-1] > 1 and t.stride(-1) != 1 and t.stride(-2) == 1


class _Tracer:
    """The two interposers plus the module stack; see the module docstring."""

    def __init__(self, unet: Any) -> None:
        import torch

        self.torch = torch
        self.names = {id(m): n for n, m in unet.named_modules()}
        self.modules = dict(unet.named_modules())
        self.stack: list[str] = []
        self.forwards: list[_Forward] = []
        self.pending: list[int] = []  # forward records whose autograd node is not linked yet
        self.gemms: list[TraceGemm] = []
        self.backward = False

    # --- module stack -------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        def pre(mod: Any, args: Any) -> None:
            self.stack.append(self.names.get(id(mod), "?"))

        def post(mod: Any, args: Any, out: Any) -> None:
            self.stack.pop()

        handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def current(self) -> str:
        return self.stack[-1] if self.stack and self.stack[-1] else "unet"

    def kind_of(self, name: str) -> tuple[str, Any]:
        mod = self.modules.get(name if name != "unet" else "")
        cls = type(mod).__name__
        if cls == "Linear":
            return ("lora" if ".lora_" in name else "linear"), mod
        if cls == "Conv2d":
            return "conv", mod
        if cls == "Attention":
            return "attention", mod
        return "other", mod

    # --- forward: tag autograd nodes ----------------------------------------------------------
    def tag(self, out: Any) -> None:
        torch = self.torch
        module = self.current()
        roots = [t.grad_fn for t in _tensors(out) if isinstance(t, torch.Tensor) and t.grad_fn]
        found: list[Any] = []
        seen: set[int] = set()
        todo = list(roots)
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if "module" in node.metadata or node.name().endswith("AccumulateGrad"):
                continue
            node.metadata["module"] = module
            if node.name() in _GEMM_NODES.values():
                found.append(node)
            todo.extend(nxt for nxt, _ in node.next_functions)
        if not found and not self.pending:
            return
        needing = [i for i in self.pending if any(self.forwards[i].needs)]
        self.pending.clear()
        # Nodes are created in dispatch order; creation sequence numbers recover that order.
        found.sort(key=lambda nd: nd._sequence_nr())
        if len(found) != len(needing):
            raise RuntimeError(
                f"trace: {len(needing)} differentiable GEMMs but {len(found)} GEMM nodes "
                f"in {module}"
            )
        for node, idx in zip(found, needing, strict=True):
            want = _GEMM_NODES[self.forwards[idx].gemm.op]
            if node.name() != want:
                raise RuntimeError(f"trace: {node.name()} linked to a {want} in {module}")
            node.metadata["gemm"] = idx

    # --- dispatch: the aten GEMMs -------------------------------------------------------------
    def on_aten(self, func: Any, args: tuple[Any, ...]) -> None:
        op = func.overloadpacket.__name__
        if op not in (*_GEMM_NODES, "convolution_backward"):
            return
        if self.backward:
            self._backward(op, args)
        else:
            self._forward(op, args)

    def _forward(self, op: str, args: tuple[Any, ...]) -> None:
        name = self.current()
        kind, mod = self.kind_of(name)
        if op == "convolution":
            x, w = args[0], args[1]
            if args[6]:
                raise NotImplementedError(f"transposed convolution in {name}")
            groups = int(args[8])
            b, cin = x.shape[0], x.shape[1]
            cout, _, *kernel = w.shape
            out_spatial = _conv_out(x.shape[2:], kernel, args[3], args[4], args[5])
            m = b * math.prod(out_spatial)
            k = cin // groups * math.prod(kernel)
            gemm = TraceGemm(
                name,
                kind,
                "forward",
                m,
                k,
                cout // groups,
                groups,
                False,
                True,
                _trainable(mod),
                op,
            )
            a_t, b_t = x, w
        else:
            a_t, b_t = (args[1], args[2]) if op in ("addmm", "baddbmm") else (args[0], args[1])
            count = a_t.shape[0] if a_t.dim() == 3 else 1
            m, k = a_t.shape[-2], a_t.shape[-1]
            gemm = TraceGemm(
                name,
                kind,
                "forward",
                m,
                k,
                b_t.shape[-1],
                count,
                _transposed(a_t),
                _transposed(b_t),
                kind in ("linear", "lora") and _trainable(mod),
                op,
            )
        weight = 1 if kind in ("linear", "lora", "conv") else None
        self.forwards.append(_Forward(gemm, (a_t.requires_grad, b_t.requires_grad), weight))
        self.pending.append(len(self.forwards) - 1)
        self.gemms.append(gemm)

    def _backward(self, op: str, args: tuple[Any, ...]) -> None:
        node = self.torch._C._current_autograd_node()
        if node is None or "gemm" not in node.metadata:
            where = None if node is None else node.name()
            raise RuntimeError(f"trace: backward {op} outside a linked GEMM node ({where})")
        fwd = self.forwards[node.metadata["gemm"]]
        g = fwd.gemm
        if op == "convolution_backward":
            dy, x, w = args[0], args[1], args[2]
            groups = int(args[9])
            mask = args[10]
            cout, _, *kernel = w.shape
            rows = dy.shape[0] * math.prod(dy.shape[2:])
            cols = x.shape[1] // groups * math.prod(kernel)
            if mask[0]:
                self.gemms.append(
                    TraceGemm(
                        g.name,
                        g.kind,
                        "input_grad",
                        rows,
                        cout // groups,
                        cols,
                        groups,
                        False,
                        False,
                        g.trainable,
                        op,
                    )
                )
            if mask[1]:
                self.gemms.append(
                    TraceGemm(
                        g.name,
                        g.kind,
                        "weight_grad",
                        cols,
                        rows,
                        cout // groups,
                        groups,
                        True,
                        False,
                        g.trainable,
                        op,
                    )
                )
            return
        a_t, b_t = (args[1], args[2]) if op in ("addmm", "baddbmm") else (args[0], args[1])
        count = a_t.shape[0] if a_t.dim() == 3 else 1
        m, k, n = a_t.shape[-2], a_t.shape[-1], b_t.shape[-1]
        remaining = node.metadata.setdefault(
            "remaining", [i for i in (1, 0) if fwd.needs[i]]
        )  # autograd computes mat2's gradient before mat1's
        # The gradient of op(A) (M x K) reduces over N, that of op(B) (K x N) over M; aten may
        # produce either transposed, so compare the reduction and the unordered output dims.
        fits = {
            0: (g.n, {g.m, g.k}),
            1: (g.m, {g.k, g.n}),
        }
        matching = [i for i in remaining if fits[i] == (k, {m, n})]
        if not matching:
            raise RuntimeError(f"trace: backward {op} {m}x{k}x{n} does not fit {g.name}")
        operand = matching[0]
        remaining.remove(operand)
        phase = "weight_grad" if operand == fwd.weight_operand else "input_grad"
        self.gemms.append(
            TraceGemm(
                g.name,
                g.kind,
                phase,
                m,
                k,
                n,
                count,
                _transposed(a_t),
                _transposed(b_t),
                g.trainable,
                op,
            )
        )

    def skipped(self) -> list[tuple[str, str, str, int]]:
        out = []
        for f in self.forwards:
            for i in (0, 1):
                if f.needs[i]:
                    continue
                if i == f.weight_operand:
                    why = "weight_grad of a frozen weight"
                else:
                    why = "input_grad nobody needs"
                out.append((f.gemm.name, f.gemm.kind, why, f.gemm.macs))
        return out


def _trainable(mod: Any) -> bool:
    w = getattr(mod, "weight", None)
    return bool(w is not None and w.requires_grad)


def _tensors(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return [out]


def _conv_out(
    spatial: Any, kernel: list[int], stride: Any, padding: Any, dilation: Any
) -> list[int]:
    return [
        (int(s) + 2 * int(p) - int(d) * (int(kk) - 1) - 1) // int(st) + 1
        for s, kk, st, p, d in zip(spatial, kernel, stride, padding, dilation, strict=True)
    ]


def build_unet(spec: UNetSpec, mode: str, rank: int | None) -> Any:
    """The UNet on the meta device with ``mode``'s trainable weights; classic attention."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    with torch.device("meta"):
        unet = UNet2DConditionModel(**spec.config)
        unet.requires_grad_(False)
        targets = {n: m for n, m in unet.named_modules() if n.endswith(TARGETS)}
        if mode == "full":
            for m in targets.values():
                m.weight.requires_grad_(True)
        else:
            assert rank is not None
            for n, m in targets.items():
                if rank > min(m.in_features, m.out_features):
                    raise ValueError(
                        f"rank {rank} is larger than the layer {n} ({m.in_features} -> "
                        f"{m.out_features}); it must be at most "
                        f"{min(m.in_features, m.out_features)}"
                    )
            from peft import LoraConfig

            unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(TARGETS)))
    unet.set_attn_processor(AttnProcessor())
    unet.train()
    return unet


def trace_step(
    model: str,
    mode: str,
    *,
    rank: int = 4,
    batch: int = 1,
    resolution: int | None = None,
    text_grad: bool = False,
    flop_counter: Any = None,
) -> Trace:
    """Trace one training step of ``model`` in ``mode``; see the module docstring.

    ``flop_counter`` (a ``torch.utils.flop_counter.FlopCounterMode``) is entered around the same
    step when given, so tests compare both counts on one and the same execution.

    Raises
    ------
    ValueError
        Unknown model or mode, non-positive batch/rank, a resolution that is not a positive
        multiple of the model's downsampling, or a rank larger than a target layer.
    """
    spec = get_model(model)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    batch = check_positive("batch", batch)
    rank = check_positive("rank", rank)
    resolution = spec.resolution if resolution is None else check_positive("resolution", resolution)
    if resolution % spec.resolution_step:
        raise ValueError(
            f"resolution {resolution} px is not a multiple of {spec.resolution_step} px "
            f"(VAE x{spec.vae_factor} times the UNet's downsampling) for {model}"
        )
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    unet = build_unet(spec, mode, rank if mode == "lora" else None)
    tracer = _Tracer(unet)

    class FunctionMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if not tracer.backward:
                tracer.tag(out)
            return out

    class DispatchMode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            tracer.on_aten(func, args)
            return func(*args, **(kwargs or {}))

    latent = resolution // spec.vae_factor
    meta = torch.device("meta")
    sample = torch.zeros(batch, spec.latent_channels, latent, latent, device=meta)
    noise = torch.zeros_like(sample)
    text = torch.zeros(batch, spec.text_len, spec.text_dim, device=meta, requires_grad=text_grad)
    t = torch.zeros(batch, dtype=torch.long, device=meta)
    added = {k: torch.zeros(batch, *s, device=meta) for k, s in spec.added_cond.items()}
    counter = flop_counter if flop_counter is not None else contextlib.nullcontext()
    with counter, tracer.hooks(), DispatchMode(), FunctionMode():
        pred = unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=added or None).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        tracer.backward = True
        loss.backward()
    trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    return Trace(
        model=model,
        mode=mode,
        rank=rank if mode == "lora" else None,
        batch=batch,
        resolution=resolution,
        text_grad=text_grad,
        gemms=tracer.gemms,
        skipped=tracer.skipped(),
        trainable_parameters=trainable,
    )


def add_parser(subparsers: Any) -> None:
    """Register ``qta trace``."""
    p = subparsers.add_parser(
        "trace",
        help="list every GEMM of one UNet training step (full or LoRA) as JSONL",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--model", required=True, help=f"one of {', '.join(sorted(MODELS))}")
    p.add_argument("--mode", required=True, help="full (Custom Diffusion) or lora")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    p.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    p.add_argument("--resolution", type=int, help="image size in pixels (default: native)")
    p.add_argument(
        "--text-grad",
        action="store_true",
        help="the text embedding needs a gradient (trained text encoder / modifier token)",
    )
    p.add_argument("--out", type=Path, help="write the trace here (JSONL)")
    p.add_argument("--summary", action="store_true", help="print totals")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Trace, write ``--out`` atomically, print ``--summary``."""
    if args.out is None and not args.summary:
        raise CliError("nothing to do: give --out FILE.jsonl and/or --summary")
    get_model(args.model)
    if args.mode not in MODES:
        raise CliError(f"unknown mode {args.mode!r}; choose one of {', '.join(MODES)}")
    if args.out is not None and not args.out.parent.resolve().is_dir():
        raise CliError(f"output folder {args.out.parent} does not exist")
    try:
        trace = trace_step(
            args.model,
            args.mode,
            rank=args.rank,
            batch=args.batch,
            resolution=args.resolution,
            text_grad=args.text_grad,
        )
    except ImportError as exc:
        raise CliError(f"tracing needs torch==2.13.0 and the ml extra: {exc}") from None
    if args.out is not None:
        trace.write_jsonl(args.out)
    if args.summary:
        print(trace.format_summary())
    if args.out is not None:
        print(f"wrote {len(trace.gemms)} GEMMs to {args.out}", file=sys.stderr)
    return 0
