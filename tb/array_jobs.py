"""Jobs the simulated array core answers: the demo's GEMMs and the simulation-speed benchmark.

Both drive :class:`~cdm_qta.hw.core.ArrayCore` through :class:`~cdm_qta.tb.array_tb.ArrayTB`,
check every result against :func:`cdm_qta.golden.gemm` and every cycle count against
:mod:`cdm_qta.hw.timing`, and return plain data for a table.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from cdm_qta import golden
from cdm_qta.hw.config import ArrayConfig, Dataflow
from cdm_qta.hw.timing import program_cycles

from .array_tb import ArrayTB, OsOp, WsOp, random_op
from .stimulus import CLOCK_NS

__all__ = ["ArrayJobs"]


class ArrayJobs:
    """``open``, then ``demo_gemm`` and ``bench_throughput``."""

    def __init__(self, dut: object) -> None:
        self.dut = dut
        self.cfg = ArrayConfig.from_env()
        self.tb: ArrayTB | None = None

    async def open(self, *, seed: int = 0) -> dict[str, Any]:
        self.rng = np.random.default_rng(seed)
        self.tb = ArrayTB(self.dut, self.cfg, self.rng)
        await self.tb.start()
        return {"config": self.cfg.to_dict()}

    def _bench(self) -> ArrayTB:
        if self.tb is None:
            raise RuntimeError("the session was not opened")
        return self.tb

    async def demo_gemm(self, *, seed: int, m: int, k: int) -> dict[str, Any]:
        """Random GEMMs through the array in both dataflows; bit-exactness and cycles."""
        tb, cfg = self._bench(), self.cfg
        n = cfg.n
        rng = np.random.default_rng(seed)
        # WS: A[m x N] @ W[N x 2N] as two back-to-back column tiles sharing the input rows.
        a = golden.rand_int(rng, (m, n), cfg.operand_bits)
        w = golden.rand_int(rng, (n, 2 * n), cfg.operand_bits)
        # OS: A[2N x k] @ B[k x N] as two back-to-back row tiles.
        a2 = golden.rand_int(rng, (2 * n, k), cfg.operand_bits)
        b2 = golden.rand_int(rng, (k, n), cfg.operand_bits)
        cases = [
            ("WS", f"{m}x{n} @ {n}x{2 * n}", [WsOp(a=a, w=w[:, :n]), WsOp(a=a, w=w[:, n:])]),
            ("OS", f"{2 * n}x{k} @ {k}x{n}", [OsOp(a=a2[:n], b=b2), OsOp(a=a2[n:], b=b2)]),
        ]
        rows = []
        for mode, shape, ops in cases:
            start = time.perf_counter()
            try:
                result, _model = await tb.run(ops)  # raises on any element that differs
                exact, cycles = True, result.cycles
            except AssertionError as exc:
                self.dut._log.error(str(exc))
                exact, cycles = False, None
            macs = sum(int(np.prod(op.a.shape)) * op.expected(cfg).shape[1] for op in ops)
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
        return {"gemms": rows, "seed": seed}

    async def bench_throughput(self, *, rows: int, free_cycles: int = 0) -> dict[str, Any]:
        """Simulation speed: driven (random data every cycle) and free-running WS streams."""
        from cocotb.triggers import ReadOnly, RisingEdge, Timer

        tb, cfg, dut, rng = self._bench(), self.cfg, self.dut, self.rng
        n = cfg.n
        # Driven: back-to-back full WS tiles, new random data on both streams every cycle.
        ops = [random_op(rng, cfg, Dataflow.WS, k=n, m=rows, cols=n) for _ in range(2)]
        a_beats, b_beats = tb.beats(ops)
        start = time.perf_counter()
        run = await tb.drive(a_beats, b_beats, expect_rows=tb.output_rows(ops))
        driven_s = time.perf_counter() - start
        tb.check_results(ops, run)
        driven_cycles = run.out_cycles[-1] + 1
        macs = sum(op.a.shape[0] * n * n for op in ops)
        result: dict[str, Any] = {
            "driven_cycles": driven_cycles,
            "driven_cycles_per_s": round(driven_cycles / driven_s),
            "driven_macs_per_s": round(macs / driven_s),
        }
        if free_cycles:
            # Free-running: one WS tile whose input row stays on the wire, accepted every cycle;
            # the simulator runs without Python between edges (the RTL's own speed).
            row = tb.codec.beat(golden.rand_int(rng, (n,), cfg.operand_bits), n, Dataflow.WS, False)
            weights = tb.beats([random_op(rng, cfg, Dataflow.WS, k=n, m=1, cols=n)])[1]
            await tb.drive([], weights, expect_rows=0)
            dut.a__payload.value = row
            dut.a__valid.value = 1
            start = time.perf_counter()
            await Timer(free_cycles * CLOCK_NS, unit="ns")
            free_s = time.perf_counter() - start
            await ReadOnly()
            assert dut.a__ready.value and dut.o__valid.value, "array not streaming"
            await RisingEdge(dut.clk)
            dut.a__valid.value = 0
            result.update(
                {
                    "free_cycles": free_cycles,
                    "free_cycles_per_s": round(free_cycles / free_s),
                    "free_macs_per_s": round(free_cycles * n * n / free_s),
                }
            )
        return result
