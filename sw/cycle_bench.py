"""How fast the cycle model predicts a whole training step: a benchmark, not a test.

``python -m cdm_qta.sw.cycle_bench [model] [mode] [N]`` (default: ``sd15 lora 64``).
"""

from __future__ import annotations

import sys
import time

from cdm_qta.hw.config import AcceleratorConfig

from . import compiler
from .compiler import GemmProgram, ShapeError, choose_dataflow
from .cycle_model import Prediction, predict
from .trace import trace_step

__all__ = ["bench_step"]


def bench_step(model: str = "sd15", mode: str = "lora", n: int = 64) -> dict[str, float]:
    """Predict a whole training step (``qta trace``) on ``AcceleratorConfig.scaled(n)`` and
    print how long it took; a benchmark, not a test (``python -m cdm_qta.sw.cycle_bench``).

    Why: ``--dataflow auto`` and the training reports predict every GEMM of a step, so the
    model must stay fast enough for that (target: SD 1.5 at N=64 in under a minute, one
    core). Each distinct (shape, transposes) is compiled for both dataflows once and the
    faster kept; ``predict_s`` is the time spent in :func:`predict` (compiling calls it twice
    per program: to order the instructions, then on the result), ``compile_s`` everything.
    """
    t0 = time.perf_counter()
    step = trace_step(model, mode)
    trace_s = time.perf_counter() - t0
    cfg = AcceleratorConfig.scaled(n)
    spent = [0.0]
    timed = predict

    def counted(*args: object, **kwargs: object) -> Prediction:
        t = time.perf_counter()
        try:
            return timed(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            spent[0] += time.perf_counter() - t

    compiler.predict = counted  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        best: dict[tuple[int, int, int, bool, bool], GemmProgram | None] = {}
        for g in step.gemms:
            key = (g.m, g.k, g.n, g.trans_a, g.trans_b)
            if key not in best:
                t1, p1 = time.perf_counter(), spent[0]
                try:
                    best[key] = choose_dataflow(cfg, g.m, g.k, g.n, trans_a=g.trans_a,
                                                trans_b=g.trans_b)[0]  # fmt: skip
                except ShapeError:
                    best[key] = None
                dt = time.perf_counter() - t1
                if dt > 2.0:  # the slow shapes, as they come
                    print(f"  {key}: {dt:.1f} s, of which predict {spent[0] - p1:.1f} s")
        compile_s = time.perf_counter() - t0
    finally:
        compiler.predict = timed  # type: ignore[assignment]
    cycles = sum(
        g.count * p.prediction.cycles
        for g in step.gemms
        if (p := best[(g.m, g.k, g.n, g.trans_a, g.trans_b)]) is not None
    )
    macs = sum(g.macs for g in step.gemms)
    result = {
        "gemms": float(len(step.gemms)),
        "distinct": float(len(best)),
        "cycles": float(cycles),
        "utilization": macs / (cycles * n * n) if cycles else 0.0,
        "trace_s": trace_s,
        "compile_s": compile_s,
        "predict_s": spent[0],
    }
    print(
        f"{model} {mode} at N={n}: {len(step.gemms)} GEMMs, {len(best)} distinct shapes, "
        f"{cycles:,} cycles ({result['utilization']:.1%} of peak); predict {spent[0]:.1f} s, "
        f"compile with both dataflows {compile_s:.1f} s (trace {trace_s:.1f} s)"
    )
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    bench_step(*args[:2], *(int(a) for a in args[2:3]))
