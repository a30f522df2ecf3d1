"""Run one ArrayCore job inside a simulator from plain Python (no pytest): demo and benchmark.

``run_job`` generates the Verilog, builds it (reusing the build folder), runs the cocotb
coroutine named by the job inside the simulator and returns the JSON-able dict the coroutine
wrote. The coroutines are ordinary cocotb tests, selected by name.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cdm_qta import golden
from cdm_qta.hw.config import ArrayConfig, Dataflow
from cdm_qta.hw.timing import program_cycles

try:
    import cocotb
    from cocotb.triggers import ReadOnly, RisingEdge, Timer
except ImportError:  # pragma: no cover
    cocotb = None

from .array_tb import CLOCK_NS, ArrayTB, OsOp, WsOp, random_op
from .toolchain import build_root

__all__ = ["JobFailed", "build_dir_for", "run_job"]

JOB_ENV = "CDM_QTA_JOB"


class JobFailed(RuntimeError):
    """The simulation ran but the job's coroutine failed (its log says why)."""


def build_dir_for(sim: str, cfg: ArrayConfig, root: Path | None = None) -> Path:
    root = root or build_root()
    return root / "sim" / sim / cfg.module_name


def run_job(sim: str, cfg: ArrayConfig, job: dict[str, Any], root: Path | None = None) -> dict:
    """Generate, build and simulate; return the job's result plus build time and memory."""
    from cdm_qta.hw.generate import generate

    from .toolchain import build_and_test

    root = root or build_root()
    start = time.perf_counter()
    source = generate(cfg, root / "gen")
    gen_s = time.perf_counter() - start
    build_dir = build_dir_for(sim, cfg, root)
    fresh = not build_dir.exists()
    build_dir.mkdir(parents=True, exist_ok=True)
    fd, out_path = tempfile.mkstemp(suffix=".json", prefix="qta-job-")
    os.close(fd)
    rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    timings: dict[str, float] = {}
    tests, failed = build_and_test(
        sim=sim,
        sources=[source],
        toplevel=cfg.module_name,
        test_module="cdm_qta.tb.jobs",
        build_dir=build_dir,
        testcase=job["coroutine"],
        extra_env={
            ArrayConfig.ENV_VAR: cfg.to_json(),
            JOB_ENV: json.dumps({**job, "out": out_path}),
        },
        seed=job.get("seed"),
        timings=timings,
        log_file=build_dir.parent / f"{cfg.module_name}.{job['coroutine']}.log",
    )
    rss_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        if tests == 0 or failed:
            log = build_dir.parent / f"{cfg.module_name}.{job['coroutine']}.log"
            raise JobFailed(f"{job['coroutine']} failed under {sim} at {cfg}: see {log}")
        result = json.loads(Path(out_path).read_text())
    finally:
        Path(out_path).unlink(missing_ok=True)
    result.update(
        {
            "simulator": sim,
            "n": cfg.n,
            "generate_s": round(gen_s, 2),
            "fresh_build": fresh,
            "build_s": round(timings["build_s"], 2),
            "sim_process_s": round(timings["test_s"], 2),
            # ru_maxrss of children is the largest child so far (kB on Linux): the compiler's
            # peak for a fresh Verilator build; meaningless if an earlier child was larger.
            "build_peak_mb": round(rss_after / 1024, 1) if rss_after > rss_before else None,
        }
    )
    return result


def _job() -> dict[str, Any]:
    return json.loads(os.environ[JOB_ENV])


def _finish(job: dict[str, Any], result: dict[str, Any]) -> None:
    Path(job["out"]).write_text(json.dumps(result))


if cocotb is not None:

    @cocotb.test(timeout_time=1000, timeout_unit="ms")
    async def demo_gemm(dut: object) -> None:
        """Random GEMMs through the array in both dataflows; bit-exactness and cycles."""
        job = _job()
        cfg = ArrayConfig.from_env()
        n = cfg.n
        rng = np.random.default_rng(job["seed"])
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        rows = []
        m_ws, k_os = job["m"], job["k"]
        # WS: A[m x N] @ W[N x 2N] as two back-to-back column tiles sharing the input rows.
        a = golden.rand_int(rng, (m_ws, n), cfg.operand_bits)
        w = golden.rand_int(rng, (n, 2 * n), cfg.operand_bits)
        # OS: A[2N x k] @ B[k x N] as two back-to-back row tiles.
        a2 = golden.rand_int(rng, (2 * n, k_os), cfg.operand_bits)
        b2 = golden.rand_int(rng, (k_os, n), cfg.operand_bits)
        cases = [
            ("WS", f"{m_ws}x{n} @ {n}x{2 * n}", [WsOp(a=a, w=w[:, :n]), WsOp(a=a, w=w[:, n:])]),
            ("OS", f"{2 * n}x{k_os} @ {k_os}x{n}", [OsOp(a=a2[:n], b=b2), OsOp(a=a2[n:], b=b2)]),
        ]
        for mode, shape, ops in cases:
            start = time.perf_counter()
            try:
                result, _model = await tb.run(ops)
                exact = True
            except AssertionError as exc:
                dut._log.error(str(exc))
                exact = False
                result = None
            macs = sum(int(np.prod(op.a.shape)) * op.expected(cfg).shape[1] for op in ops)
            cycles = result.cycles if result else None
            rows.append(
                {
                    "dataflow": mode,
                    "shape": shape,
                    "bit_exact": exact,
                    "cycles": cycles,
                    "model_cycles": program_cycles([op.tile for op in ops], n),
                    "macs": macs,
                    "utilization": round(macs / (cycles * n * n), 4) if cycles else None,
                    "wall_s": round(time.perf_counter() - start, 3),
                }
            )
        _finish(job, {"gemms": rows, "seed": job["seed"]})

    @cocotb.test(timeout_time=100_000, timeout_unit="ms")
    async def bench_throughput(dut: object) -> None:
        """Simulation speed: driven (random data every cycle) and free-running WS streams."""
        job = _job()
        cfg = ArrayConfig.from_env()
        n = cfg.n
        rng = np.random.default_rng(job["seed"])
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        # Driven: back-to-back full WS tiles, new random data on both streams every cycle.
        ops = [random_op(rng, cfg, Dataflow.WS, k=n, m=job["rows"], cols=n) for _ in range(2)]
        a_beats, b_beats = tb.beats(ops)
        start = time.perf_counter()
        run = await tb.drive(a_beats, b_beats, expect_rows=tb.output_rows(ops))
        driven_s = time.perf_counter() - start
        tb.check_results(ops, run)
        driven_cycles = run.out_cycles[-1] + 1
        macs = sum(op.a.shape[0] * n * n for op in ops)
        result = {
            "driven_cycles": driven_cycles,
            "driven_cycles_per_s": round(driven_cycles / driven_s),
            "driven_macs_per_s": round(macs / driven_s),
        }
        if job.get("free_cycles"):
            # Free-running: one WS tile whose input row stays on the wire, accepted every cycle;
            # the simulator runs without Python between edges (the RTL's own speed).
            row = tb.codec.beat(golden.rand_int(rng, (n,), cfg.operand_bits), n, Dataflow.WS, False)
            weights = tb.beats([random_op(rng, cfg, Dataflow.WS, k=n, m=1, cols=n)])[1]
            await tb.drive([], weights, expect_rows=0)
            dut.a__payload.value = row
            dut.a__valid.value = 1
            cycles = job["free_cycles"]
            start = time.perf_counter()
            await Timer(cycles * CLOCK_NS, unit="ns")
            free_s = time.perf_counter() - start
            await ReadOnly()
            assert dut.a__ready.value and dut.o__valid.value, "array not streaming"
            await RisingEdge(dut.clk)
            dut.a__valid.value = 0
            result.update(
                {
                    "free_cycles": cycles,
                    "free_cycles_per_s": round(cycles / free_s),
                    "free_macs_per_s": round(cycles * n * n / free_s),
                }
            )
        _finish(job, result)
