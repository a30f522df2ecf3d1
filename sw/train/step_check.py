"""Run the same INT8 training on the golden back end and on the RTL, and compare bit for bit.

Why this is the strongest check the project has: a training step is dozens of GEMMs whose
outputs feed each other through quantization, torch autograd and AdamW, so one wrong INT32
anywhere changes every later tensor. Both runs start from the same checkpoint, seeds and data;
the check compares, in order, every GEMM's identity (layer, role, shape) and INT32 result, then
every loss and every trained tensor (each LoRA ``A``/``B`` and ``V*``'s embedding) after the
last update: all must be *identical*, not close.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from cdm_qta.hw.config import AcceleratorConfig

from .checkpoint import Checkpoint
from .loop import FineTuned, fine_tune
from .offload import Accelerator
from .qlora import lora_layers
from .settings import TrainConfig

__all__ = ["StepCheck", "compare_backends", "trained_tensors"]


@dataclasses.dataclass(frozen=True)
class StepCheck:
    """Outcome of :func:`compare_backends` (``mismatches`` empty when identical)."""

    backend: str
    steps: int
    gemms_compared: int
    tensors_compared: int
    golden_seconds: float
    backend_seconds: float
    mismatches: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "identical": self.identical}


def trained_tensors(run: FineTuned) -> dict[str, torch.Tensor]:
    """Every trained tensor of a run by name: LoRA A/B of each layer and the token embedding."""
    out = {"token_embedding": run.token_embedding}
    for name, layer in lora_layers(run.unet).items():
        for pname, p in layer.named_parameters():
            if "lora_" in pname:
                out[f"{name}.{pname}"] = p.detach()
    return out


def _compare(golden: Accelerator, other: Accelerator, a: FineTuned, b: FineTuned) -> list[str]:
    bad: list[str] = []
    if len(golden.records) != len(other.records):
        bad.append(f"{len(golden.records)} GEMMs on golden, {len(other.records)} on {other.name}")
    assert golden.results is not None and other.results is not None
    pairs = zip(golden.records, other.records, golden.results, other.results, strict=False)
    for i, (rg, ro, cg, co) in enumerate(pairs):
        where = f"GEMM {i} ({rg.layer} {rg.role}, step {rg.step})"
        if (rg.layer, rg.role, rg.m, rg.k, rg.n) != (ro.layer, ro.role, ro.m, ro.k, ro.n):
            bad.append(f"{where}: the other back end ran {ro.layer} {ro.role}")
        elif not np.array_equal(cg, co):
            diff = int(np.count_nonzero(cg != co))
            bad.append(f"{where}: {diff} of {cg.size} INT32 results differ")
    if [r["loss"] for r in a.losses] != [r["loss"] for r in b.losses]:
        bad.append("the training losses differ")
    ta, tb = trained_tensors(a), trained_tensors(b)
    for name in ta:
        if name not in tb or not torch.equal(ta[name], tb[name]):
            bad.append(f"trained tensor {name} differs")
    return bad


def compare_backends(
    ckpt: Checkpoint,
    instance: np.ndarray,
    prior: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    backend: str,
    accel_cfg: AcceleratorConfig,
    *,
    progress: bool = False,
    accelerator: Accelerator | None = None,
) -> tuple[StepCheck, FineTuned, Accelerator]:
    """Train ``cfg`` (INT8) on golden and on ``backend``; return the check and ``backend``'s run.

    ``accelerator`` reuses an open back end (one simulator process for the whole command);
    otherwise one is made and closed here.

    Raises
    ------
    ValueError
        ``cfg`` is not an INT8 configuration.
    """
    if cfg.precision != "int8":
        raise ValueError("only INT8 training runs on a back end; use precision int8")
    t0 = time.perf_counter()
    with Accelerator("golden", accel_cfg, keep_results=True) as gold:
        ref = fine_tune(ckpt, instance, prior, cfg, accelerator=gold, progress=progress)
    t_gold = time.perf_counter() - t0
    own = accelerator is None
    other = accelerator or Accelerator(backend, accel_cfg, keep_results=True)
    if other.results is None:
        raise ValueError("the accelerator must keep its results (keep_results=True)")
    try:
        t1 = time.perf_counter()
        got = fine_tune(ckpt, instance, prior, cfg, accelerator=other, progress=progress)
        t_other = time.perf_counter() - t1
        bad = _compare(gold, other, ref, got)
    finally:
        if own:
            other.close()
    check = StepCheck(
        backend=backend,
        steps=cfg.max_train_steps,
        gemms_compared=min(len(gold.records), len(other.records)),
        tensors_compared=len(trained_tensors(ref)),
        golden_seconds=round(t_gold, 2),
        backend_seconds=round(t_other, 2),
        mismatches=tuple(bad),
    )
    return check, got, other
