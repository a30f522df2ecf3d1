"""How fast a whole training step is predicted, and how close the estimate is: a benchmark.

``python -m cdm_qta.sw.cycle_bench [--model sd15] [--mode lora] [--n 64] [--check K]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from cdm_qta.hw.config import AcceleratorConfig

from .compiler import ShapeError, compile_gemm
from .estimate import Estimate, estimate_best
from .trace import trace_step

__all__ = ["bench_step"]

Key = tuple[int, int, int, bool, bool]


def bench_step(
    model: str = "sd15", mode: str = "lora", n: int = 64, check: int = 0
) -> dict[str, float]:
    """Predict every GEMM of a training step (``qta trace``) on ``AcceleratorConfig.scaled(n)``
    with both dataflows (:func:`~cdm_qta.sw.estimate.estimate_best`, one estimate per distinct
    shape) and print how long it took (target: SD 1.5 at N=64 in under a minute, one core).

    ``check``: also compile the ``check`` slowest extended estimates' whole programs and
    compare their cycles with the whole-program model (slow: minutes per big GEMM).
    """
    t0 = time.perf_counter()
    step = trace_step(model, mode)
    trace_s = time.perf_counter() - t0
    cfg = AcceleratorConfig.scaled(n)
    t0, cpu0 = time.perf_counter(), time.process_time()
    best: dict[Key, Estimate | None] = {}
    spent: dict[Key, float] = {}
    for g in step.gemms:
        key = (g.m, g.k, g.n, g.trans_a, g.trans_b)
        if key in best:
            continue
        t1 = time.perf_counter()
        try:
            best[key] = estimate_best(cfg, g.m, g.k, g.n, trans_a=g.trans_a, trans_b=g.trans_b)[0]
        except ShapeError:
            best[key] = None
        spent[key] = time.perf_counter() - t1
        if spent[key] > 2.0:  # the slow shapes, as they come
            e = best[key]
            how = "-" if e is None else f"{e.simulated_blocks}/{e.blocks} blocks"
            if e is not None and "N" in e.cut:
                how += ", a few column tiles per chunk"
            print(f"  {key}: {spent[key]:.1f} s ({how})", flush=True)
    predict_s = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    cycles = sum(
        g.count * e.cycles
        for g in step.gemms
        if (e := best[(g.m, g.k, g.n, g.trans_a, g.trans_b)]) is not None
    )
    macs = sum(g.macs for g in step.gemms)
    extended = [k for k, e in best.items() if e is not None and not e.exact]
    result = {
        "gemms": float(len(step.gemms)),
        "distinct": float(len(best)),
        "extended": float(len(extended)),
        "unsupported": float(sum(e is None for e in best.values())),
        "cycles": float(cycles),
        "utilization": macs / (cycles * n * n) if cycles else 0.0,
        "trace_s": trace_s,
        "predict_s": predict_s,
        "predict_cpu_s": cpu_s,
    }
    print(
        f"{model} {mode} at N={n}: {len(step.gemms)} GEMMs, {len(best)} distinct shapes "
        f"({len(extended)} extended from a few M blocks or column tiles, "
        f"{int(result['unsupported'])} that do not fit), {cycles:,} cycles "
        f"({result['utilization']:.1%} of peak); both dataflows "
        f"estimated in {predict_s:.1f} s ({cpu_s:.1f} CPU s; trace {trace_s:.1f} s)"
    )
    for key in sorted(extended, key=lambda k: -spent[k])[:check]:
        e = best[key]
        assert e is not None
        t1 = time.perf_counter()
        full = compile_gemm(cfg, *key[:3], dataflow=e.dataflow, trans_a=key[3], trans_b=key[4])
        err = e.cycles - full.prediction.cycles
        print(
            f"  {key} {e.dataflow.name}: estimate {e.cycles:,}, whole program "
            f"{full.prediction.cycles:,} ({err:+,} cycles, {err / full.prediction.cycles:+.4%}); "
            f"{spent[key]:.1f} s vs {time.perf_counter() - t1:.1f} s"
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cdm_qta.sw.cycle_bench", description=__doc__)
    p.add_argument("--model", default="sd15")
    p.add_argument("--mode", default="lora", choices=("lora", "full"))
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--check", type=int, default=0, help="compare K estimates with whole runs")
    a = p.parse_args(argv)
    bench_step(a.model, a.mode, a.n, a.check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
