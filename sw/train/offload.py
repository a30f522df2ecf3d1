"""Send the training step's INT8 GEMMs to one back end, and record what each one cost.

Why one object for a whole run: the RTL back end keeps one simulator process for its life (one
build, one launch), so :class:`Accelerator` makes the back end once (:func:`make_backend`) and
every layer of every step uses it. Each GEMM arrives as a :class:`~cdm_qta.golden.lora.GemmOp`
with its INT8 operands *as stored* (``golden.lora.run_program``'s executor hook: quantization and
scales stay in golden) and goes through the runtime exactly as :func:`cdm_qta.sw.runtime.run_gemm`
sends it (``compile_for`` + ``execute``: compiled for ``dataflow="auto"``, operands placed in
DRAM, run, ``C`` read back). The program is compiled once per shape and reused: the
instructions depend only on the shape, the transposes and the configuration, and the returned
program says which dataflow ``auto`` chose, which the report needs.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cdm_qta.golden.lora import GemmExecutor, GemmOp
from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.sw.backends import make_backend
from cdm_qta.sw.compiler import GemmProgram
from cdm_qta.sw.runtime import compile_for, execute

__all__ = ["Accelerator", "GemmRecord"]


@dataclasses.dataclass(frozen=True)
class GemmRecord:
    """One GEMM the accelerator ran.

    Members
    -------
    step : training step (from 1).
    layer : the UNet module (``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k``).
    role : the GemmOp's name (``fwd_base`` ... ``wgrad_b``).
    phase : ``forward``, ``input_grad`` or ``weight_grad``.
    m, k, n : shape of ``op(a) @ op(b)``.
    dataflow : ``ws`` or ``os`` (what ``auto`` chose).
    cycles : cycles from the hardware counter (RTL) or the cycle model (golden).
    macs : multiply-accumulates the back end counted.
    source : ``hardware`` or ``model``: where ``cycles`` came from.
    """

    step: int
    layer: str
    role: str
    phase: str
    m: int
    k: int
    n: int
    dataflow: str
    cycles: int | None
    macs: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Accelerator:
    """One back end for a whole run plus the log of every GEMM sent to it.

    Parameters
    ----------
    backend : ``golden``, ``verilator`` or ``icarus``.
    cfg : the accelerator configuration.
    keep_results : also keep every INT32 result, in order (for bit-for-bit comparisons).
    """

    def __init__(self, backend: str, cfg: AcceleratorConfig, *, keep_results: bool = False):
        self.cfg = cfg
        self.backend = make_backend(backend, cfg)
        self.name = backend
        self.records: list[GemmRecord] = []
        self.results: list[NDArray[np.int32]] | None = [] if keep_results else None
        self.step = 0
        self.seconds = 0.0
        self._programs: dict[tuple[int, int, int, bool, bool], GemmProgram] = {}

    def executor(self, layer: str) -> GemmExecutor:
        """The ``run_program`` executor of ``layer``: run the GEMM here, log it, return INT32."""

        def run(op: GemmOp, a: NDArray[np.signedinteger], b: NDArray[np.signedinteger]) -> NDArray:
            t0 = time.perf_counter()
            key = (op.m, op.k, op.n, op.trans_a, op.trans_b)
            program = self._programs.get(key)
            if program is None:
                program = compile_for(self.cfg, a, b, "auto", op.trans_a, op.trans_b)
                self._programs[key] = program
            c, stats = execute(self.backend, program, a, b)
            if not stats.ok:
                bits = ", ".join(k for k, v in stats.errors.items() if v)
                raise RuntimeError(f"{layer} {op.name}: the {self.name} back end reported {bits}")
            self.records.append(
                GemmRecord(
                    step=self.step,
                    layer=layer,
                    role=op.name,
                    phase=str(op.phase),
                    m=op.m,
                    k=op.k,
                    n=op.n,
                    dataflow=program.dataflow.name.lower(),
                    cycles=stats.cycles,
                    macs=stats.macs,
                    source=stats.timing,
                )
            )
            if self.results is not None:
                self.results.append(np.asarray(c, dtype=np.int32).copy())
            self.seconds += time.perf_counter() - t0
            return c

        return run

    def step_summary(self, step: int) -> dict[str, Any]:
        """GEMMs, MACs, cycles and utilization of one step, with MACs and cycles by phase."""
        rows = [r for r in self.records if r.step == step]
        return summarize(rows, self.cfg.n)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Accelerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarize(rows: list[GemmRecord], array_n: int) -> dict[str, Any]:
    """Totals of a list of records (one step's, typically)."""
    cycles = [r.cycles for r in rows]
    total_cycles = None if any(c is None for c in cycles) else sum(c for c in cycles if c)
    macs = sum(r.macs for r in rows)
    by_phase: dict[str, dict[str, int]] = defaultdict(lambda: {"gemms": 0, "macs": 0, "cycles": 0})
    by_dataflow: dict[str, int] = defaultdict(int)
    for r in rows:
        by_phase[r.phase]["gemms"] += 1
        by_phase[r.phase]["macs"] += r.macs
        by_phase[r.phase]["cycles"] += r.cycles or 0
        by_dataflow[r.dataflow] += 1
    return {
        "gemms": len(rows),
        "macs": macs,
        "cycles": total_cycles,
        "utilization": (macs / (total_cycles * array_n**2)) if total_cycles else None,
        "by_phase": dict(by_phase),
        "gemms_by_dataflow": dict(by_dataflow),
        "cycles_source": sorted({r.source for r in rows}),
    }
