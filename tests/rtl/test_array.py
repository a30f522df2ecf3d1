"""ArrayCore regressions: every result bit-exact against golden, every cycle against the model.

The cocotb half (the ``@cocotb.test`` functions) runs inside the simulator; the pytest half at
the bottom generates the Verilog for each configuration and runs the cocotb half under
Verilator and Icarus.
"""

from __future__ import annotations

import numpy as np
import pytest

from cdm_qta import golden
from cdm_qta.hw.config import ArrayConfig, Dataflow
from cdm_qta.hw.timing import os_cycles, program_cycles, ws_cycles

try:  # the cocotb half only exists inside a simulator
    import cocotb
    from cocotb.triggers import ReadOnly, RisingEdge, Timer
except ImportError:  # pragma: no cover - pytest collects this file without cocotb installed
    cocotb = None

from regression import run_regression

from cdm_qta.tb.array_tb import ArrayTB, OsOp, WsOp, random_op
from cdm_qta.tb.stimulus import CLOCK_NS, pauses
from cdm_qta.tb.targets import SimTarget, Top

TIMEOUT_MS = 200  # simulated time; the longest test (wrap-around) needs ~1.4 ms at N <= 8


def _setup(dut: object) -> tuple[ArrayConfig, np.random.Generator]:
    cfg = ArrayConfig.from_env()
    seed = cocotb.RANDOM_SEED
    dut._log.info(f"config {cfg.to_json()}, test seed {seed}")
    return cfg, np.random.default_rng(seed)


if cocotb is not None:

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def random_single_tiles(dut: object) -> None:
        """Random WS and OS tiles of every size, one at a time: results and cycles exact."""
        cfg, rng = _setup(dut)
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        for mode in (Dataflow.WS, Dataflow.OS) * 6:
            op = random_op(rng, cfg, mode)
            result, model = await tb.run([op])
            tb.check_timeline(result, model)
            t = op.tile
            want = ws_cycles(cfg.n, t.k, t.m) if mode == Dataflow.WS else os_cycles(cfg.n, t.k)
            assert result.cycles == want, f"{op.tile}: {result.cycles} cycles, formula {want}"

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def edge_shapes(dut: object) -> None:
        """K = 1, single rows, single columns and full N x N tiles, in both dataflows."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        shapes = [(1, 1, 1), (1, n, n), (n, 1, n), (n, n, 1), (1, 1, n), (n, n, n), (2, 3, 1)]
        for k, m, cols in shapes:
            for mode in (Dataflow.WS, Dataflow.OS):
                op = random_op(rng, cfg, mode, k=min(k, n), m=min(m, n), cols=min(cols, n))
                result, model = await tb.run([op])
                tb.check_timeline(result, model)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def extreme_values(dut: object) -> None:
        """-128 * -128 over the longest WS column and long OS reductions; +127/-128 mixes."""
        cfg, rng = _setup(dut)
        n = cfg.n
        lo, hi = -(1 << (cfg.operand_bits - 1)), (1 << (cfg.operand_bits - 1)) - 1
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        full_lo = np.full((n, n), lo, dtype=np.int64)
        mixed = rng.choice([lo, hi], size=(4 * n, n))
        ops = [
            WsOp(a=np.full((2 * n, n), lo, dtype=np.int64), w=full_lo),
            OsOp(a=np.full((n, 4 * n), lo, dtype=np.int64), b=np.full((4 * n, n), lo)),
            WsOp(a=mixed, w=rng.choice([lo, hi], size=(n, n))),
            OsOp(a=mixed[:n, :], b=rng.choice([lo, hi], size=(n, n))),
        ]
        for op in ops:
            await tb.run([op])

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def accumulator_wraps_like_golden(dut: object) -> None:
        """An OS reduction past 2**31 wraps exactly as golden does (INT32 two's complement)."""
        cfg, rng = _setup(dut)
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        lo = -(1 << (cfg.operand_bits - 1))
        steps = golden.max_safe_reduction(operand_bits=cfg.operand_bits, acc_bits=cfg.acc_bits)
        steps += 2  # two products past the largest sum that cannot wrap
        m = cols = min(cfg.n, 2)
        a_beats, b_beats = tb.beats(
            [OsOp(a=np.full((m, 1), lo), b=np.full((1, cols), lo))]
        )  # one step's beats, last = 1; re-encode the first steps with last = 0
        codec = tb.codec
        step = codec.beat(np.full(cfg.n, lo), m, Dataflow.OS, False)
        step_b = codec.beat(np.full(cfg.n, lo), cols, Dataflow.OS, False)
        dut.a__payload.value = step
        dut.b__payload.value = step_b
        dut.a__valid.value = 1
        dut.b__valid.value = 1
        # Free-run steps-1 identical steps (the core takes one per cycle, no Python in the loop):
        # land mid-cycle after the (steps-2)th edge, check, take one more edge.
        await Timer((steps - 2) * CLOCK_NS + CLOCK_NS // 2, unit="ns")
        await ReadOnly()
        assert dut.a__ready.value, "the core stopped taking OS steps"
        await RisingEdge(dut.clk)
        result = await tb.drive(a_beats, b_beats, expect_rows=cfg.n)
        got = result.out_rows[::-1][:m, :cols]
        want = golden.wrap(np.full((m, cols), steps * lo * lo), cfg.acc_bits)
        assert want[0, 0] < 0, "the test must actually wrap"
        np.testing.assert_array_equal(got, want)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def back_to_back_ws(dut: object) -> None:
        """Consecutive WS tiles: weights of tile j+1 load during tile j, no preload bubble."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        for k, m, tiles in ((n, 2 * n, 5), (n, max(1, n // 2), 4), (max(1, n // 2), n, 6)):
            ops = [random_op(rng, cfg, Dataflow.WS, k=k, m=m) for _ in range(tiles)]
            result, model = await tb.run(ops)
            tb.check_timeline(result, model)
            assert result.cycles == ws_cycles(n, k, m, tiles)
            if m >= k:  # one input row per cycle from the first to the last row
                span = result.a_accepts[-1] - result.a_accepts[0] + 1
                assert span == m * tiles, f"input rows took {span} cycles for {m * tiles} rows"

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def back_to_back_os(dut: object) -> None:
        """Consecutive OS tiles: tile j drains while tile j+1 accumulates."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        for k, tiles in ((n, 5), (2 * n + 1, 3), (max(1, n // 2), 4), (1, 3)):
            ops = [random_op(rng, cfg, Dataflow.OS, k=k) for _ in range(tiles)]
            result, model = await tb.run(ops)
            tb.check_timeline(result, model)
            assert result.cycles == os_cycles(n, k, tiles)
            if k >= n:  # draining never stalls accumulation: one step per cycle throughout
                span = result.a_accepts[-1] - result.a_accepts[0] + 1
                assert span == k * tiles, f"{k * tiles} OS steps took {span} cycles"

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def mode_switches(dut: object) -> None:
        """WS and OS tiles interleaved back to back, in random order and sizes."""
        cfg, rng = _setup(dut)
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        program = [Dataflow.WS, Dataflow.OS, Dataflow.WS, Dataflow.WS, Dataflow.OS, Dataflow.OS]
        program += list(rng.choice([Dataflow.WS, Dataflow.OS], size=8))
        ops = [random_op(rng, cfg, Dataflow(int(mode))) for mode in program]
        result, model = await tb.run(ops)
        tb.check_timeline(result, model)
        assert result.cycles == program_cycles([op.tile for op in ops], cfg.n)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def random_bubbles(dut: object) -> None:
        """Random idle cycles on both input streams change timing, never results."""
        cfg, rng = _setup(dut)
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        modes = rng.choice([Dataflow.WS, Dataflow.OS], size=10)
        ops = [random_op(rng, cfg, Dataflow(int(mode))) for mode in modes]
        result, _ = await tb.run(ops, pause=pauses(rng, 0.4))
        assert result.cycles >= program_cycles([op.tile for op in ops], cfg.n)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def reset_mid_operation(dut: object) -> None:
        """Reset in the middle of WS and OS tiles; the next program is exact and on time."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        for mode in (Dataflow.WS, Dataflow.OS, Dataflow.WS):
            ops = [random_op(rng, cfg, mode, k=n, m=n) for _ in range(3)]
            a_beats, b_beats = tb.beats(ops)
            stop = int(rng.integers(1, 3 * n))
            await tb.drive(a_beats, b_beats, expect_rows=tb.output_rows(ops), stop_after=stop)
            await tb.reset()
            assert not dut.busy.value, "busy after reset"
            ops = [random_op(rng, cfg, Dataflow(int(x))) for x in rng.choice([0, 1], size=4)]
            result, model = await tb.run(ops)
            tb.check_timeline(result, model)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def errors_are_flagged(dut: object) -> None:
        """Too many weight rows and mismatched OS `last` flags set sticky error bits."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = ArrayTB(dut, cfg, rng)
        await tb.start()
        assert dut.error.value.to_unsigned() == 0
        codec = tb.codec
        rows = [codec.beat(np.zeros(n), n, Dataflow.WS, i == n) for i in range(n + 1)]
        await tb.drive([], rows, expect_rows=0)
        await RisingEdge(dut.clk)
        assert dut.error.value.to_unsigned() == 0b01, "weight tile of N+1 rows not flagged"
        await tb.reset()
        assert dut.error.value.to_unsigned() == 0, "reset must clear errors"
        a_beat = codec.beat(np.zeros(n), n, Dataflow.OS, True)
        b_beat = codec.beat(np.zeros(n), n, Dataflow.OS, False)
        await tb.drive([a_beat], [b_beat], expect_rows=0)
        await RisingEdge(dut.clk)
        assert dut.error.value.to_unsigned() == 0b10, "OS last mismatch not flagged"
        await tb.reset()
        op = random_op(rng, cfg, Dataflow.OS)
        await tb.run([op])  # and the core still works


# ---------------------------------------------------------------------------------------------
# pytest half: one build per (simulator, configuration), all cocotb tests above in it.

SIZES = [2, 4, 5, 8, 16]  # 5: a size that is not a power of two
QUICK_TESTS = ["random_single_tiles", "back_to_back_ws", "back_to_back_os", "mode_switches"]
#: 131k cycles: 80 s of Icarus at N=16, so Icarus runs it only up to N=8 (Verilator at every N).
WRAP_TEST = "accumulator_wraps_like_golden"
ICARUS_WRAP_MAX_N = 8


def run_array_regression(sim: str, n: int, **kwargs: object) -> None:
    target = SimTarget(sim, Top.ARRAY, ArrayConfig(n=n))
    run_regression(target, __name__, **kwargs)  # type: ignore[arg-type]


@pytest.mark.sim
@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n{n}")
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_array(sim: str, n: int) -> None:
    run_array_regression(sim, n, exclude=[WRAP_TEST])


@pytest.mark.sim
@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n{n}")
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_array_wraps(sim: str, n: int) -> None:
    """INT32 wrap-around after 131k reduction steps (its own item: the slowest array test)."""
    if sim == "icarus" and n > ICARUS_WRAP_MAX_N:
        pytest.skip(
            f"Icarus runs the 131k-cycle wrap test only for N <= {ICARUS_WRAP_MAX_N} "
            f"(80 s at N=16); Verilator covers N={n}"
        )
    run_array_regression(sim, n, testcase=WRAP_TEST)


@pytest.mark.sim
@pytest.mark.slow
def test_array_n64_verilator() -> None:
    """The paper's 64 x 64 array: a few minutes of Verilator build, then the core checks."""
    run_array_regression("verilator", 64, testcase=QUICK_TESTS)
