"""Accelerator regressions: programs fetched from DRAM, DRAM in the simulator or cocotbext-axi.

Every result is read back from DRAM and compared with the golden models: compiled GEMMs
element for element with :func:`cdm_qta.golden.gemm`, hand-written programs byte for byte with
:class:`~cdm_qta.sw.golden_backend.GoldenBackend` run on the same DRAM contents, which must
also report the same error bits and the same MAC, instruction and DMA byte counts. Hardware
errors must show up in STATUS and leave the accelerator usable; AXI protocol monitors on both
ports fail a test the moment a rule breaks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from regression import run_regression

from cdm_qta import golden
from cdm_qta.hw.axi import AxiResp
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import Buffer, Compute, Fence, Instruction, Load, Store
from cdm_qta.hw.regs import Reg
from cdm_qta.sw.cycle_model import DeadlockError, predict
from cdm_qta.sw.dependencies import ProgramError, verify_program
from cdm_qta.sw.dram import DramImage
from cdm_qta.sw.golden_backend import GoldenBackend
from cdm_qta.sw.rtl_backend import cycle_budget
from cdm_qta.sw.runtime import compile_for
from cdm_qta.tb.accel_tb import AccelTB
from cdm_qta.tb.sim_top import SimTopConfig
from cdm_qta.tb.targets import SimTarget, Top

try:
    import cocotb
except ImportError:  # pragma: no cover
    cocotb = None

TIMEOUT_MS = 200  # simulated time per cocotb test (the wrap test is the longest)
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]
#: Counters the golden back end counts exactly, as the hardware does.
EXACT_COUNTERS = ("macs", "insns_retired", "dma_read_bytes", "dma_write_bytes")
#: Per engine, the counters of cycles in which it waits: each such cycle is one of its busy
#: cycles (a wait needs a queued instruction or a transfer in flight), and every busy cycle
#: is one of the ``cycles`` counter's (an engine is busy only while the accelerator is).
ENGINE_WAITS = {
    "load": ("wait_token", "wait_bus"),
    "compute": ("wait_token", "wait_array"),
    "store": ("wait_token", "wait_bus"),
}


def _setup(dut: object) -> tuple[SimTopConfig, np.random.Generator]:
    top = SimTopConfig.from_env()
    seed = cocotb.RANDOM_SEED
    dut._log.info(f"config {top.to_json()}, test seed {seed}")
    return top, np.random.default_rng(seed)


def check_counters(cfg: AcceleratorConfig, counters: dict[str, int]) -> None:
    """Bounds every counter obeys by the way hw/accelerator.py counts (all 64 bits of each,
    also those no model predicts): a wait inside its engine's busy cycles, those inside
    ``cycles``; at most N*N MACs per busy compute cycle and one bus beat of written bytes per
    busy store cycle."""
    cycles = counters["cycles"]
    for engine, waits in ENGINE_WAITS.items():
        busy = counters[f"{engine}_busy"]
        assert busy <= cycles, f"{engine}_busy {busy} > cycles {cycles}"
        for wait in waits:
            value = counters[f"{engine}_{wait}"]
            assert value <= busy, f"{engine}_{wait} {value} > {engine}_busy {busy}"
    macs, compute = counters["macs"], counters["compute_busy"]
    assert macs <= cfg.n * cfg.n * compute, f"{macs} MACs in {compute} compute cycles"
    written, store = counters["dma_write_bytes"], counters["store_busy"]
    assert written <= cfg.dram_bus_bytes * store, f"{written} bytes in {store} store cycles"


def _pad(x: np.ndarray, stride: int) -> bytes:
    """Rows of ``x`` (any integer dtype, little-endian) padded to ``stride`` bytes each."""
    raw = np.ascontiguousarray(x).view(np.uint8).reshape(x.shape[0], -1)
    out = np.zeros((x.shape[0], stride), dtype=np.uint8)
    out[:, : raw.shape[1]] = raw
    return out.tobytes()


def _round(x: int, to: int) -> int:
    return -(-x // to) * to


class Twin:
    """The RTL and the golden back end side by side, on the same DRAM contents.

    Every write goes to both; :meth:`run` runs a program on both and checks that they report
    the same error bits and the same exact counters; :meth:`check` compares a DRAM range byte
    for byte. The golden back end is the ISA's executable reference (its GEMMs are
    :func:`cdm_qta.golden.gemm`).
    """

    def __init__(self, tb: AccelTB) -> None:
        self.tb = tb
        self.gold = GoldenBackend(tb.accel, predict_cycles=False)

    async def mirror(self) -> None:
        """Give the golden DRAM the RTL's current data area (earlier tests of this simulation
        left bytes there)."""
        top = self.tb.cfg
        base = top.accel.dram_base
        data = await self.tb.dram_read(base, top.program_base - base)
        self.gold.load(DramImage(base, np.frombuffer(data, dtype=np.uint8).copy()))

    async def write(self, addr: int, data: bytes) -> None:
        await self.tb.dram_write(addr, data)
        self.gold.load(DramImage(addr, np.frombuffer(data, dtype=np.uint8).copy()))

    async def run(self, program: list, *, budget: int | None = None) -> tuple[set, dict]:
        words = [w if isinstance(w, int) else w.encode() for w in program]
        cycles = budget or cycle_budget(self.tb.accel, words)
        errors, counters = await self.tb.run(words, max_cycles=cycles)
        want = self.gold.run(words)
        gold_errors = {k for k, v in want.errors.items() if v}
        assert errors == gold_errors, f"RTL errors {errors}, golden {gold_errors}"
        for name in EXACT_COUNTERS:
            assert counters[name] == want.counters[name], (
                f"{name}: RTL {counters[name]}, golden {want.counters[name]}"
            )
        check_counters(self.tb.accel, counters)
        self.check_cycles(words, errors, counters)
        return errors, counters

    def check_cycles(self, words: list[int], errors: set, counters: dict) -> None:
        """The cycle model must equal the hardware's ``cycles`` counter on every clean run on
        the in-simulator DRAM without stalls (the model is exact there; with random stalls,
        cocotbext-axi's DRAM or error bits the timing is not the model's to predict)."""
        top = self.tb.cfg
        if errors or top.dram != "model" or self.tb.pause:
            return
        try:
            predicted = predict(top.accel, words, top.timing).cycles
        except DeadlockError:
            return
        assert counters["cycles"] == predicted, (
            f"cycles: RTL {counters['cycles']}, cycle model {predicted}"
        )

    async def check(self, addr: int, nbytes: int) -> None:
        got = np.frombuffer(await self.tb.dram_read(addr, nbytes), dtype=np.uint8)
        want = np.frombuffer(self.gold.read(addr, nbytes), dtype=np.uint8)
        bad = np.flatnonzero(got != want)
        assert not bad.size, (
            f"{bad.size} DRAM bytes differ from golden, first at {addr + bad[0]:#x}"
        )


def single_tile_program(
    cfg: AcceleratorConfig, mode: Dataflow, a: np.ndarray, b: np.ndarray
) -> tuple[list[Instruction], dict[str, int]]:
    """LOAD, LOAD, COMPUTE, STORE, FENCE for one tile; returns the program and DRAM addresses.

    WS: input rows = rows of A, weight rows = rows of B. OS: input rows = columns of A.
    """
    bus = cfg.dram_bus_bytes
    m, k = a.shape
    c = b.shape[1]
    in_rows = a if mode == Dataflow.WS else a.T
    addrs = {"a": 0, "b": 0x1000, "c": 0x2000}
    a_stride, b_stride, c_stride = _round(in_rows.shape[1], bus), _round(c, bus), _round(4 * c, bus)
    program: list[Instruction] = [
        Load(buffer=Buffer.INPUT, rows=in_rows.shape[0], row_bytes=in_rows.shape[1],
             dram_addr=addrs["a"], stride=a_stride),
        Load(buffer=Buffer.WEIGHT, rows=k, row_bytes=c, dram_addr=addrs["b"], stride=b_stride,
             push_next=True),
        Compute(dataflow=int(mode), k=k, m=m, c=c, pop_prev=True, push_next=True),
        Store(rows=m, row_bytes=4 * c, dram_addr=addrs["c"], stride=c_stride, pop_prev=True),
        Fence(),
    ]  # fmt: skip
    layout = {"a_stride": a_stride, "b_stride": b_stride, "c_stride": c_stride, **addrs}
    return program, layout


async def run_single_tile(tb: AccelTB, mode: Dataflow, a: np.ndarray, b: np.ndarray) -> dict:
    cfg = tb.accel
    program, lay = single_tile_program(cfg, mode, a, b)
    in_rows = a if mode == Dataflow.WS else a.T
    await tb.dram_write(lay["a"], _pad(in_rows.astype(np.int8), lay["a_stride"]))
    await tb.dram_write(lay["b"], _pad(b.astype(np.int8), lay["b_stride"]))
    errors, counters = await tb.run(program, max_cycles=cycle_budget(cfg, program))
    assert not errors, f"errors: {errors}"
    m, c = a.shape[0], b.shape[1]
    raw = await tb.dram_read(lay["c"], m * lay["c_stride"])
    got = np.frombuffer(raw, dtype="<i4").reshape(m, -1)[:, :c]
    np.testing.assert_array_equal(got, golden.gemm(a, b))
    assert counters["macs"] == a.shape[0] * a.shape[1] * c
    check_counters(cfg, counters)
    return counters


async def run_compiled(
    tb: AccelTB, a: np.ndarray, b: np.ndarray, mode: str, trans_a: bool, trans_b: bool
) -> tuple[dict[str, int], object]:
    """Compile op(a) @ op(b), run it from DRAM to DRAM, compare with golden element for element."""
    program = compile_for(tb.accel, a, b, mode, trans_a, trans_b)
    lay = program.layout
    image = lay.image(a, b)
    await tb.dram_write(image.base, image.data)
    budget = cycle_budget(tb.accel, program.instructions)
    errors, counters = await tb.run(program.instructions, max_cycles=budget)
    assert not errors, f"errors {errors}"
    got = lay.unpack_c(await tb.dram_read(lay.c_base, lay.c_bytes))
    want = golden.gemm(a.T if trans_a else a, b.T if trans_b else b)
    np.testing.assert_array_equal(got, want)
    assert counters["macs"] == program.macs
    check_counters(tb.accel, counters)
    return counters, program


if cocotb is not None:

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def single_tiles(dut: object) -> None:
        """One WS and one OS tile end to end through DRAM."""
        top, rng = _setup(dut)
        n = top.accel.n
        tb = AccelTB(dut, top, rng)
        await tb.start()
        for mode in (Dataflow.WS, Dataflow.OS):
            m, k, c = (int(v) for v in rng.integers(1, n + 1, size=3))
            counters = await run_single_tile(
                tb, mode, golden.rand_int(rng, (m, k)), golden.rand_int(rng, (k, c))
            )
            dut._log.info(f"{mode.name} {m}x{k}x{c}: {counters}")

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def bus_backpressure(dut: object) -> None:
        """Random stalls on all five AXI channels: results unchanged."""
        top, rng = _setup(dut)
        n = top.accel.n
        tb = AccelTB(dut, top, rng, pause=0.4)
        await tb.start()
        for mode in (Dataflow.WS, Dataflow.OS, Dataflow.WS):
            a = golden.rand_int(rng, (int(rng.integers(1, n + 1)), n))
            b = golden.rand_int(rng, (n, int(rng.integers(1, n + 1))))
            await run_single_tile(tb, mode, a, b)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def bad_input_sets_errors(dut: object) -> None:
        """Illegal words, ranges, windows, alignment, fetch and bus errors: error bits, no hang,
        the same bits and counts as the golden back end, and the next GEMM is exact."""
        top, rng = _setup(dut)
        cfg = top.accel
        n, bus = cfg.n, cfg.dram_bus_bytes
        tb = AccelTB(dut, top, rng)
        await tb.start()
        twin = Twin(tb)
        await twin.mirror()
        outside = cfg.dram_base + cfg.dram_size
        cases = [
            ("illegal_insn", [0]),  # opcode 0
            ("illegal_insn", [(7 | 1 << 8)]),  # opcode 7
            ("illegal_insn", [Load(rows=1, row_bytes=1, pop_prev=True)]),
            ("load_range", [Load(sram_row=cfg.input_rows - 1, rows=2, row_bytes=1)]),
            (
                "dma_window",
                [Load(rows=2, row_bytes=min(bus, n), dram_addr=outside - bus, stride=bus)],
            ),
            ("dma_align", [Load(rows=1, row_bytes=1, dram_addr=1)]),
            ("dma_align", [Load(rows=1, row_bytes=n + 1)]),
            ("compute_range", [Compute(dataflow=int(Dataflow.WS), k=n + 1, m=1, c=1)]),
            ("compute_range", [Compute(dataflow=int(Dataflow.OS), k=1, m=n + 1, c=1)]),
            ("compute_range", [Compute(k=1, m=1, c=0)]),
            ("store_range", [Store(sram_row=cfg.output_rows, rows=1, row_bytes=4)]),
            ("dma_window", [Store(rows=1, row_bytes=4, dram_addr=outside)]),
            # A rejected STORE between good ones: its rows are dropped while the write response
            # of the burst before it is still due; all three retire, the last one writes.
            (
                "dma_window",
                [
                    Store(rows=2, row_bytes=4 * n, dram_addr=0x100, stride=_round(4 * n, bus)),
                    Store(rows=2, row_bytes=4, dram_addr=outside, stride=bus),
                    Store(rows=1, row_bytes=4 * n, dram_addr=0x200),
                ],
            ),
            ("load_range", [Load(rows=0, row_bytes=1)]),
            ("illegal_insn", [Fence(push_next=True)]),
            # Tokens of rejected instructions still flow: a consumer waiting on them finishes.
            (
                "compute_range",
                [
                    Compute(k=1, m=1, c=0, push_next=True),
                    Store(rows=1, row_bytes=4, dram_addr=0x100, pop_prev=True),
                ],
            ),
            (
                "illegal_insn",
                [
                    Load(rows=1, row_bytes=1, push_next=True, push_prev=True),
                    Compute(k=1, m=1, c=1, pop_prev=True),
                ],
            ),
        ]
        for want, program in cases:
            errors, _ = await twin.run([*program, Fence()])
            assert errors == {want}, f"{[str(p) for p in program]}: errors {errors}, want {want}"
            busy, _ = await tb.status()
            assert not busy
            await tb.clear()
            assert not (await tb.status())[1], "CONTROL[0] must clear the error bits"
            a, b = golden.rand_int(rng, (n, n)), golden.rand_int(rng, (n, n))
            await run_single_tile(tb, Dataflow.WS, a, b)  # and the next GEMM is exact
        # Bus errors: on a read and on a write, SLVERR (and DECERR on the in-simulator DRAM).
        resps = [AxiResp.SLVERR] if top.dram == "cocotb" else [AxiResp.SLVERR, AxiResp.DECERR]
        for resp in resps:
            for mode, region in ((Dataflow.WS, (0, 16)), (Dataflow.OS, (0x2000, 0x2010))):
                tb.set_faults([region], resp)
                a, b = golden.rand_int(rng, (n, n)), golden.rand_int(rng, (n, n))
                program, _layout = single_tile_program(cfg, mode, a, b)
                errors, _ = await tb.run(program, max_cycles=cycle_budget(cfg, program))
                want = "dma_read_bus" if region[0] == 0 else "dma_write_bus"
                assert errors == {want}, f"bus error {resp} at {region}: errors {errors}"
                tb.set_faults([])
                await run_single_tile(tb, mode, a, b)
        # Fetch errors: a misaligned program, one too long, one outside the window, and a bus
        # error while fetching; each leaves the accelerator idle and done.
        fetch_cases = [
            ("fetch_align", top.program_base + 8, 1),
            ("fetch_align", top.program_base, 1 << 31),
            ("fetch_window", outside, 1),
        ]
        for want, addr, count in fetch_cases:
            await tb.write_reg(Reg.FETCH_ADDR, addr)
            await tb.write_reg(Reg.FETCH_COUNT, count)
            await tb.start_program()
            await tb.wait_done(1000)
            busy, errors = await tb.status()
            assert errors == {want} and not busy, f"fetch {addr:#x} x {count}: {errors}"
        tb.set_faults([(top.program_base, top.program_base + 16)])
        errors, _ = await tb.run([Fence()], max_cycles=1000)
        assert "fetch_bus" in errors, errors
        tb.set_faults([])
        a, b = golden.rand_int(rng, (n, n)), golden.rand_int(rng, (n, n))
        await run_single_tile(tb, Dataflow.OS, a, b)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def host_pushed_programs(dut: object) -> None:
        """The register path: words pushed one by one run exactly; a full queue drops words."""
        top, rng = _setup(dut)
        cfg = top.accel
        n = cfg.n
        tb = AccelTB(dut, top, rng)
        await tb.start()
        a, b = golden.rand_int(rng, (n, n)), golden.rand_int(rng, (n, n))
        program, lay = single_tile_program(cfg, Dataflow.WS, a, b)
        await tb.dram_write(lay["a"], _pad(a.astype(np.int8), lay["a_stride"]))
        await tb.dram_write(lay["b"], _pad(b.astype(np.int8), lay["b_stride"]))
        errors, counters = await tb.run_pushed(program)
        assert not errors and counters["insns_retired"] == len(program)
        raw = await tb.dram_read(lay["c"], n * lay["c_stride"])
        got = np.frombuffer(raw, dtype="<i4").reshape(n, -1)[:, :n]
        np.testing.assert_array_equal(got, golden.gemm(a, b))
        # A STORE waiting for a token that never comes keeps the queues full.
        blocked = Store(rows=1, row_bytes=4, pop_prev=True)
        for _ in range(cfg.insn_queue_depth + cfg.engine_queue_depth + 8):
            word = blocked.encode()
            for i in range(4):
                await tb.write_reg(Reg.INSN0 + 4 * i, (word >> (32 * i)) & 0xFFFFFFFF)
        busy, errors = await tb.status()
        assert busy and "queue_overflow" in errors, errors

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def deadlock_is_detected_and_flushed(dut: object) -> None:
        """Programs that can never finish: `deadlock` within a few cycles, the waiting work
        dropped exactly as the golden back end drops it, and the next program is exact."""
        top, rng = _setup(dut)
        cfg = top.accel
        n = cfg.n
        tb = AccelTB(dut, top, rng)
        await tb.start()
        twin = Twin(tb)
        await twin.mirror()
        await twin.write(0, bytes(range(256)) * 4)
        cases = [
            [Store(rows=1, row_bytes=4, dram_addr=0x400, pop_prev=True), Fence()],
            [
                Load(rows=1, row_bytes=4, push_next=True),
                Compute(k=1, m=1, c=1, pop_prev=True, pop_next=True),  # no STORE pushes
                Store(rows=1, row_bytes=4, dram_addr=0x400, pop_prev=True),
                Load(rows=1, row_bytes=4),  # never dispatched behind the FENCE below?
                Fence(),
                Load(rows=1, row_bytes=4),
            ],
            # Queue depth decides: more waiting STOREs than fit behind the blocked one.
            [*(Store(rows=1, row_bytes=4, dram_addr=0x400, pop_prev=True),) * 8,
             Compute(k=1, m=1, c=1, push_next=True), Fence()],
        ]  # fmt: skip
        for program in cases:
            errors, counters = await twin.run(program, budget=5_000)
            assert errors == {"deadlock"}, errors
            assert counters["cycles"] < 5_000
            await twin.check(0x400, 64)
            a, b = golden.rand_int(rng, (n, n)), golden.rand_int(rng, (n, n))
            await run_single_tile(tb, Dataflow.WS, a, b)

    @cocotb.test(timeout_time=TIMEOUT_MS * 5, timeout_unit="ms")
    async def random_gemms(dut: object) -> None:
        """Compiled GEMMs of awkward shapes (odd sizes, 1s, long K that splits, accumulate in
        both dataflows), every transpose combination, both dataflows, with bus stalls."""
        top, rng = _setup(dut)
        cfg = top.accel
        n = cfg.n
        tb = AccelTB(dut, top, rng, pause=0.2)
        await tb.start()
        shapes = [(1, 1, 1), (1, 3 * n + 1, 2), (2 * n + 3, 4, n + 1), (n + 1, n - 1 or 1, 1)]
        shapes += [tuple(int(x) for x in rng.integers(1, 3 * n + 2, size=3)) for _ in range(2)]
        shapes.append((n, 4 * cfg.input_rows // 2 + 3, n))  # K splits in both dataflows
        accumulated = {Dataflow.WS: 0, Dataflow.OS: 0}
        for m, k, nn in shapes:
            for trans_a, trans_b in TRANSPOSES:
                for mode in ("ws", "os"):
                    a = golden.rand_int(rng, (k, m) if trans_a else (m, k))
                    b = golden.rand_int(rng, (nn, k) if trans_b else (k, nn))
                    _, program = await run_compiled(tb, a, b, mode, trans_a, trans_b)
                    accumulated[program.dataflow] += sum(
                        isinstance(i, Compute) and i.accumulate for i in program.instructions
                    )
            dut._log.info(f"{m}x{k}x{nn}: all transposes, both dataflows exact")
        assert all(accumulated.values()), f"accumulating computes ran: {accumulated}"

    @cocotb.test(timeout_time=TIMEOUT_MS * 5, timeout_unit="ms")
    async def accumulators_wrap_like_golden(dut: object) -> None:
        """The output buffer's read-modify-write wraps at 2**31 exactly as golden, in OS
        (long accumulating reductions) and WS (accumulating on top of them)."""
        top, rng = _setup(dut)
        cfg = top.accel
        n, bus = cfg.n, cfg.dram_bus_bytes
        tb = AccelTB(dut, top, rng)
        await tb.start()
        twin = Twin(tb)
        k = cfg.input_rows - n  # OS reduction rows; the last n input rows feed the WS tiles
        per_compute = k * 128 * 128
        computes = (1 << 31) // per_compute + 1  # one past the largest sum that cannot wrap
        m = c = min(n, 2)
        stride = _round(n, bus)
        # Input rows 0..k-1: columns of A (all -128); rows k..: WS inputs; weights: -128.
        await twin.write(0, bytes([0x80]) * (cfg.input_rows * stride))
        program: list[Instruction] = [
            Load(buffer=Buffer.INPUT, rows=cfg.input_rows, row_bytes=n, dram_addr=0,
                 stride=stride),
            Load(buffer=Buffer.WEIGHT, rows=k, row_bytes=n, dram_addr=0, stride=stride,
                 push_next=True),
        ]  # fmt: skip
        for i in range(computes):
            program.append(
                Compute(dataflow=int(Dataflow.OS), accumulate=i > 0, a_row=0, k=k, m=m, c=c,
                        pop_prev=i == 0)
            )  # fmt: skip
        for _ in range(3):  # WS tiles on the same output rows: the wrap in the WS path
            program.append(
                Compute(dataflow=int(Dataflow.WS), accumulate=True, a_row=k, k=min(n, k), m=m,
                        c=c)
            )  # fmt: skip
        program[-1] = dataclasses.replace(program[-1], push_next=True)
        out = 0x4000
        program += [
            Store(rows=m, row_bytes=4 * c, dram_addr=out, stride=_round(4 * c, bus),
                  pop_prev=True),
            Fence(),
        ]  # fmt: skip
        await twin.run(program)
        await twin.check(out, m * _round(4 * c, bus))
        total = computes * per_compute + 3 * min(n, k) * 128 * 128
        raw = await tb.dram_read(out, 4)
        assert int.from_bytes(raw, "little", signed=True) == golden.wrap(np.array(total), 32)
        assert total >= 1 << 31, "the sum must wrap"

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def chained_gemms_through_dram(dut: object) -> None:
        """A STORE whose bytes a later LOAD reads, ordered by a FENCE: the verifier demands it,
        and the RTL gives the golden back end's bytes."""
        top, rng = _setup(dut)
        cfg = top.accel
        n = cfg.n
        tb = AccelTB(dut, top, rng)
        await tb.start()
        twin = Twin(tb)
        await twin.mirror()
        a, b = golden.rand_int(rng, (n, n)), golden.rand_int(rng, (n, n))
        first, lay = single_tile_program(cfg, Dataflow.WS, a, b)
        await twin.write(lay["a"], _pad(a.astype(np.int8), lay["a_stride"]))
        await twin.write(lay["b"], _pad(b.astype(np.int8), lay["b_stride"]))
        # The second GEMM reads the first one's INT32 results, bytes as INT8 operands.
        second = [
            Load(buffer=Buffer.INPUT, sram_row=n, rows=n, row_bytes=n, dram_addr=lay["c"],
                 stride=lay["c_stride"]),
            Load(buffer=Buffer.WEIGHT, sram_row=n, rows=n, row_bytes=n, dram_addr=lay["b"],
                 stride=lay["b_stride"], push_next=True),
            Compute(k=n, m=n, c=n, a_row=n, b_row=n, out_row=n, pop_prev=True, push_next=True),
            Store(sram_row=n, rows=n, row_bytes=4 * n, dram_addr=0x3000, stride=lay["c_stride"],
                  pop_prev=True),
            Fence(),
        ]  # fmt: skip
        racy = [*first[:-1], *second]
        try:
            verify_program(cfg, racy)
        except ProgramError as exc:
            assert "DRAM" in str(exc), exc
        else:
            raise AssertionError("verify_program missed the STORE -> LOAD hazard through DRAM")
        chained = [*first, *second]
        verify_program(cfg, chained)
        await twin.run(chained)
        await twin.check(lay["c"], n * lay["c_stride"])
        await twin.check(0x3000, n * lay["c_stride"])

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def more_transfers_than_fit_in_flight(dut: object) -> None:
        """Single-row LOADs and STOREs, more than ``transfers_in_flight`` (up to 4x, as the
        buffers allow), released at once: the first input LOAD waits for a token while the
        queues fill behind it, so the engines' queues of started transfers run full with the
        next instruction waiting. Every row must still land where its own instruction says
        (rows 16 apart differ in bit 4 of their row number), as in the golden back end."""
        top, rng = _setup(dut)
        cfg = top.accel
        n, bus = cfg.n, cfg.dram_bus_bytes
        tb = AccelTB(dut, top, rng)
        await tb.start()
        twin = Twin(tb)
        await twin.mirror()
        rows = min(4 * cfg.transfers_in_flight, cfg.input_rows, cfg.output_rows)
        a, b = golden.rand_int(rng, (rows, n)), golden.rand_int(rng, (n, n))
        a_stride, c_stride = _round(n, bus), _round(4 * n, bus)
        b_addr, c_addr = rows * a_stride, 0x1000
        await twin.write(0, _pad(a.astype(np.int8), a_stride))
        await twin.write(b_addr, _pad(b.astype(np.int8), a_stride))
        program: list[Instruction] = [
            Load(buffer=Buffer.WEIGHT, rows=n, row_bytes=n, dram_addr=b_addr, stride=a_stride,
                 push_next=True),
            # Holds the input LOADs back until the weights are in (its output row is
            # overwritten below).
            Compute(k=n, m=1, c=n, pop_prev=True, push_prev=True),
        ]  # fmt: skip
        program += [
            Load(buffer=Buffer.INPUT, sram_row=r, rows=1, row_bytes=n, dram_addr=r * a_stride,
                 pop_next=r == 0, push_next=r == rows - 1)
            for r in range(rows)
        ]  # fmt: skip
        program.append(Compute(k=n, m=rows, c=n, pop_prev=True, push_next=True))
        program += [
            Store(sram_row=r, rows=1, row_bytes=4 * n, dram_addr=c_addr + r * c_stride,
                  pop_prev=r == 0)
            for r in range(rows)
        ]  # fmt: skip
        await twin.run([*program, Fence()])
        await twin.check(c_addr, rows * c_stride)
        got = np.frombuffer(await tb.dram_read(c_addr, rows * c_stride), dtype="<i4")
        np.testing.assert_array_equal(got.reshape(rows, -1)[:, :n], golden.gemm(a, b))

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def reset_in_the_middle_of_a_program(dut: object) -> None:
        """Reset while a GEMM runs: the accelerator comes back idle, clean and exact."""
        from cocotb.triggers import ClockCycles

        top, rng = _setup(dut)
        if top.dram != "model":
            return  # the cocotbext-axi RAM keeps its open bursts across a reset (see AccelTB)
        cfg = top.accel
        n = cfg.n
        tb = AccelTB(dut, top, rng)
        await tb.start()
        a = golden.rand_int(rng, (6 * n, 3 * n))
        b = golden.rand_int(rng, (3 * n, 2 * n))
        program = compile_for(cfg, a, b, "ws")
        image = program.layout.image(a, b)
        await tb.dram_write(image.base, image.data)
        words = [i.encode() for i in program.instructions]
        await tb.dram_write(top.program_base, b"".join(w.to_bytes(16, "little") for w in words))
        await tb.write_reg(Reg.FETCH_ADDR, top.program_base)
        await tb.write_reg(Reg.FETCH_COUNT, len(words))
        await tb.start_program()
        await ClockCycles(dut.clk, int(rng.integers(20, 200)))
        assert dut.busy.value, "the program must still be running when reset comes"
        await tb.reset()
        busy, errors = await tb.status()
        assert not busy and not errors and not dut.done.value
        counters = await tb.counters()
        assert not any(counters.values()), f"counters after reset: {counters}"
        await run_compiled(tb, a, b, "os", False, False)

    def random_stream(
        cfg: AcceleratorConfig, rng: np.random.Generator, blocks: int
    ) -> tuple[list, list[dict]]:
        """A legal stream of independent tiles with random extra dependencies and order.

        Each block is LOAD A, LOAD B (token to COMPUTE), COMPUTE (token to STORE), STORE, on
        its own SRAM rows and DRAM bytes, so every stored result is defined. On top, random
        COMPUTE->LOAD and STORE->COMPUTE tokens; the engines' instruction lists are merged in
        a random order that a sequential execution could complete (no pop of an empty token
        queue): any such stream must complete on the hardware whatever the engine speeds.
        Blocks stop when the SRAMs are full.
        """
        n, bus = cfg.n, cfg.dram_bus_bytes
        rows = {"in": 0, "w": 0, "out": 0}
        dram = 0x100
        per_engine: list[list[Load | Compute | Store]] = [[], [], []]
        specs = []
        for _ in range(blocks):
            mode = Dataflow(int(rng.integers(2)))
            k = int(rng.integers(1, (n if mode == Dataflow.WS else 2 * n) + 1))
            m = int(rng.integers(1, (2 * n if mode == Dataflow.WS else n) + 1))
            c = int(rng.integers(1, n + 1))
            a = golden.rand_int(rng, (m, k))
            b = golden.rand_int(rng, (k, c))
            in_rows = a if mode == Dataflow.WS else a.T
            if (
                rows["in"] + in_rows.shape[0] > cfg.input_rows
                or rows["w"] + k > cfg.weight_rows
                or rows["out"] + m > cfg.output_rows
            ):
                break
            spec = {"mode": mode, "a": a, "b": b, "in_rows": in_rows}
            spec["a_addr"], dram = dram, dram + in_rows.shape[0] * _round(in_rows.shape[1], bus)
            spec["b_addr"], dram = dram, dram + k * _round(c, bus)
            spec["c_addr"], dram = dram, dram + m * _round(4 * c, bus)
            la = Load(
                buffer=Buffer.INPUT,
                sram_row=rows["in"],
                rows=in_rows.shape[0],
                row_bytes=in_rows.shape[1],
                dram_addr=spec["a_addr"],
                stride=_round(in_rows.shape[1], bus),
                pop_next=bool(rng.random() < 0.5),
            )
            lb = Load(
                buffer=Buffer.WEIGHT,
                sram_row=rows["w"],
                rows=k,
                row_bytes=c,
                dram_addr=spec["b_addr"],
                stride=_round(c, bus),
                push_next=True,
            )
            comp = Compute(
                dataflow=int(mode),
                a_row=rows["in"],
                b_row=rows["w"],
                out_row=rows["out"],
                k=k,
                m=m,
                c=c,
                pop_prev=True,
                push_next=True,
                push_prev=bool(rng.random() < 0.5),
                pop_next=bool(rng.random() < 0.5),
            )
            st = Store(
                sram_row=rows["out"],
                rows=m,
                row_bytes=4 * c,
                dram_addr=spec["c_addr"],
                stride=_round(4 * c, bus),
                pop_prev=True,
                push_prev=bool(rng.random() < 0.5),
            )
            rows["in"] += in_rows.shape[0]
            rows["w"] += k
            rows["out"] += m
            per_engine[0] += [la, lb]
            per_engine[1].append(comp)
            per_engine[2].append(st)
            specs.append(spec)
        pops = {0: {"pop_next": "c2l"}, 1: {"pop_prev": "l2c", "pop_next": "s2c"},
                2: {"pop_prev": "c2s"}}  # fmt: skip
        pushes = {0: {"push_next": "l2c"}, 1: {"push_prev": "c2l", "push_next": "c2s"},
                  2: {"push_prev": "s2c"}}  # fmt: skip
        tokens = dict.fromkeys(("l2c", "c2l", "c2s", "s2c"), 0)
        program = []
        heads = [0, 0, 0]
        while any(heads[e] < len(per_engine[e]) for e in range(3)):
            ready = []
            for e in range(3):
                if heads[e] == len(per_engine[e]):
                    continue
                insn = per_engine[e][heads[e]]
                if all(tokens[q] > 0 for f, q in pops[e].items() if getattr(insn, f)):
                    ready.append(e)
            if not ready:
                # Only the random extra pops can block: drop one from an engine's head.
                e = next(e for e in range(3) if heads[e] < len(per_engine[e]))
                insn = per_engine[e][heads[e]]
                extra = "pop_next" if e != 2 else "pop_prev"
                per_engine[e][heads[e]] = dataclasses.replace(insn, **{extra: False})
                continue
            e = ready[int(rng.integers(len(ready)))]
            insn = per_engine[e][heads[e]]
            for f, q in pops[e].items():
                tokens[q] -= bool(getattr(insn, f))
            for f, q in pushes[e].items():
                tokens[q] += bool(getattr(insn, f))
            program.append(insn)
            heads[e] += 1
        program.append(Fence())
        return program, specs

    @cocotb.test(timeout_time=TIMEOUT_MS * 2, timeout_unit="ms")
    async def random_stream_stress(dut: object) -> None:
        """Random legal streams, random dependencies, random bus stalls: all complete, exact."""
        top, rng = _setup(dut)
        cfg = top.accel
        bus = cfg.dram_bus_bytes
        tb = AccelTB(dut, top, rng, pause=0.0)
        await tb.start()
        for _ in range(8):
            await tb.set_pause(float(rng.uniform(0, 0.6)))
            program, specs = random_stream(cfg, rng, int(rng.integers(2, 7)))
            for spec in specs:
                in_rows, b = spec["in_rows"], spec["b"]
                await tb.dram_write(
                    spec["a_addr"], _pad(in_rows.astype(np.int8), _round(in_rows.shape[1], bus))
                )
                await tb.dram_write(
                    spec["b_addr"], _pad(b.astype(np.int8), _round(b.shape[1], bus))
                )
            errors, counters = await tb.run(program, max_cycles=cycle_budget(cfg, program) * 4)
            assert not errors, f"errors {errors} in\n" + "\n".join(map(str, program))
            for spec in specs:
                a, b = spec["a"], spec["b"]
                stride = _round(4 * b.shape[1], bus)
                raw = await tb.dram_read(spec["c_addr"], a.shape[0] * stride)
                got = np.frombuffer(raw, dtype="<i4").reshape(a.shape[0], -1)[:, : b.shape[1]]
                np.testing.assert_array_equal(got, golden.gemm(a, b))
            dut._log.info(
                f"{len(program)} instructions, bus stalls {tb.pause:.2f}: "
                f"{counters['cycles']} cycles, exact"
            )


# ---------------------------------------------------------------------------------------------

ACCEL_CONFIGS = [
    AcceleratorConfig.small(4, dram_size=1 << 16),
    AcceleratorConfig.small(5, dram_size=1 << 16),  # rows of 5 and 20 bytes on an 8-byte bus
    # Small buffers (K splits: accumulate in both dataflows) and short queues.
    AcceleratorConfig.small(
        8, rows=16, dram_size=1 << 16, insn_queue_depth=4, engine_queue_depth=2
    ),
]
#: The wrap test needs long reductions: the 16-row buffers of the last configuration would make
#: it 8192 instructions; and its 131k cycles take a minute of Icarus, so Icarus runs it at N=4.
WRAP = "accumulators_wrap_like_golden"


def _target(sim: str, cfg: AcceleratorConfig, dram: str) -> SimTarget:
    top = SimTopConfig(accel=cfg, dram=dram, dram_bytes=1 << 16)
    return SimTarget(sim, Top.ACCELERATOR, top)


@pytest.mark.sim
@pytest.mark.parametrize("dram", ["model", "cocotb"])
@pytest.mark.parametrize("cfg", ACCEL_CONFIGS, ids=lambda c: f"n{c.n}")
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_accelerator(sim: str, cfg: AcceleratorConfig, dram: str) -> None:
    exclude = [WRAP] if cfg.input_rows < 256 or (sim == "icarus" and cfg.n != 4) else []
    run_regression(_target(sim, cfg, dram), __name__, exclude=exclude)
