"""Accelerator regressions: programs through AXI4-Lite, DRAM behind AXI4 (cocotbext-axi).

Every result is read back from DRAM and compared element for element with
:func:`cdm_qta.golden.gemm`; hardware errors must show up in STATUS and leave the accelerator
usable.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cdm_qta import golden
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import Buffer, Compute, Fence, Load, Store

try:
    import cocotb
except ImportError:  # pragma: no cover
    cocotb = None

from regression import run_regression

from cdm_qta.sw.golden_backend import GoldenBackend
from cdm_qta.tb.accel_tb import AccelTB
from cdm_qta.tb.targets import SimTarget, Top

TIMEOUT_MS = 50


def _setup(dut: object) -> tuple[AcceleratorConfig, np.random.Generator]:
    cfg = AcceleratorConfig.from_env()
    seed = cocotb.RANDOM_SEED
    dut._log.info(f"config {cfg.to_json()}, test seed {seed}")
    return cfg, np.random.default_rng(seed)


def _pad(x: np.ndarray, stride: int) -> bytes:
    """Rows of ``x`` (any integer dtype, little-endian) padded to ``stride`` bytes each."""
    raw = np.ascontiguousarray(x).view(np.uint8).reshape(x.shape[0], -1)
    out = np.zeros((x.shape[0], stride), dtype=np.uint8)
    out[:, : raw.shape[1]] = raw
    return out.tobytes()


def _round(x: int, to: int) -> int:
    return -(-x // to) * to


def single_tile_program(
    cfg: AcceleratorConfig, mode: Dataflow, a: np.ndarray, b: np.ndarray
) -> tuple[list, dict[str, int]]:
    """LOAD, LOAD, COMPUTE, STORE, FENCE for one tile; returns the program and DRAM addresses.

    WS: input rows = rows of A, weight rows = rows of B. OS: input rows = columns of A.
    """
    bus = cfg.dram_bus_bytes
    m, k = a.shape
    c = b.shape[1]
    in_rows = a if mode == Dataflow.WS else a.T
    addrs = {"a": 0, "b": 0x4000, "c": 0x8000}
    a_stride = _round(in_rows.shape[1], bus)
    b_stride = _round(c, bus)
    c_stride = _round(4 * c, bus)
    program = [
        Load(
            buffer=Buffer.INPUT,
            sram_row=0,
            rows=in_rows.shape[0],
            row_bytes=in_rows.shape[1],
            dram_addr=addrs["a"],
            stride=a_stride,
        ),
        Load(
            buffer=Buffer.WEIGHT,
            sram_row=0,
            rows=k,
            row_bytes=c,
            dram_addr=addrs["b"],
            stride=b_stride,
            push_next=True,
        ),
        Compute(
            dataflow=int(mode),
            a_row=0,
            b_row=0,
            out_row=0,
            k=k,
            m=m,
            c=c,
            pop_prev=True,
            push_next=True,
        ),
        Store(
            sram_row=0,
            rows=m,
            row_bytes=4 * c,
            dram_addr=addrs["c"],
            stride=c_stride,
            pop_prev=True,
        ),
        Fence(),
    ]
    layout = {"a_stride": a_stride, "b_stride": b_stride, "c_stride": c_stride, **addrs}
    return program, layout


async def run_single_tile(
    tb: AccelTB, mode: Dataflow, a: np.ndarray, b: np.ndarray
) -> dict[str, int]:
    cfg = tb.cfg
    program, lay = single_tile_program(cfg, mode, a, b)
    in_rows = a if mode == Dataflow.WS else a.T
    tb.dram_write(lay["a"], _pad(in_rows.astype(np.int8), lay["a_stride"]))
    tb.dram_write(lay["b"], _pad(b.astype(np.int8), lay["b_stride"]))
    errors, counters = await tb.run(program)
    assert not errors, f"errors: {errors}"
    m, c = a.shape[0], b.shape[1]
    raw = tb.dram_read(lay["c"], m * lay["c_stride"])
    got = np.frombuffer(raw, dtype="<i4").reshape(m, -1)[:, :c]
    want = golden.gemm(a, b)
    np.testing.assert_array_equal(got, want)
    assert counters["macs"] == a.shape[0] * a.shape[1] * c
    return counters


if cocotb is not None:

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def single_tiles(dut: object) -> None:
        """One WS and one OS tile end to end through DRAM."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = AccelTB(dut, cfg, rng)
        await tb.start()
        for mode in (Dataflow.WS, Dataflow.OS):
            m = int(rng.integers(1, n + 1))
            k = int(rng.integers(1, n + 1))
            c = int(rng.integers(1, n + 1))
            a = golden.rand_int(rng, (m, k))
            b = golden.rand_int(rng, (k, c))
            counters = await run_single_tile(tb, mode, a, b)
            dut._log.info(f"{mode.name} {m}x{k}x{c}: {counters}")

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def bus_backpressure(dut: object) -> None:
        """Random pauses on all five AXI channels: results unchanged."""
        cfg, rng = _setup(dut)
        tb = AccelTB(dut, cfg, rng, pause=0.4)
        await tb.start()
        for mode in (Dataflow.WS, Dataflow.OS, Dataflow.WS):
            n = cfg.n
            a = golden.rand_int(rng, (int(rng.integers(1, n + 1)), n))
            b = golden.rand_int(rng, (n, int(rng.integers(1, n + 1))))
            await run_single_tile(tb, mode, a, b)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def bad_input_sets_errors(dut: object) -> None:
        """Illegal words, ranges, windows, alignment and bus errors: error bits, no hang."""
        cfg, rng = _setup(dut)
        n = cfg.n
        bus = cfg.dram_bus_bytes
        tb = AccelTB(dut, cfg, rng)
        await tb.start()
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
            ("load_range", [Load(rows=0, row_bytes=1)]),
            ("illegal_insn", [Fence(push_next=True)]),
        ]
        # Tokens of rejected instructions still flow: a consumer waiting on them finishes.
        cases.append(
            (
                "compute_range",
                [
                    Compute(k=1, m=1, c=0, push_next=True),
                    Store(rows=1, row_bytes=4, dram_addr=0x100, pop_prev=True),
                ],
            )
        )
        for want, program in cases:
            errors, _ = await tb.run([*program, Fence()])
            assert errors == {want}, f"{[str(p) for p in program]}: errors {errors}, want {want}"
            # The golden back end must flag exactly the same STATUS bits.
            gold = GoldenBackend(cfg, predict_cycles=False).run([*program, Fence()])
            assert {k for k, v in gold.errors.items() if v} == errors, (program, gold.errors)
            busy, errors = await tb.status()
            assert not busy
            await tb.clear()
            busy, errors = await tb.status()
            assert not errors, "CONTROL[0] must clear the error bits"
            a = golden.rand_int(rng, (n, n))
            b = golden.rand_int(rng, (n, n))
            await run_single_tile(tb, Dataflow.WS, a, b)  # and the next GEMM is exact
        # Bus errors: SLVERR on a read and on a write, then exact results again.
        for mode, region in ((Dataflow.WS, (0, 16)), (Dataflow.OS, (0x8000, 0x8010))):
            tb.faults = [region]
            a = golden.rand_int(rng, (n, n))
            b = golden.rand_int(rng, (n, n))
            program, _layout = single_tile_program(cfg, mode, a, b)
            errors, _ = await tb.run(program)
            want = "dma_read_bus" if region[0] == 0 else "dma_write_bus"
            assert errors == {want}, f"bus error at {region}: errors {errors}"
            tb.faults = []
            await run_single_tile(tb, mode, a, b)

    @cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
    async def queue_overflow_is_reported(dut: object) -> None:
        """Writing more instructions than the queue holds drops them with an error bit."""
        cfg, rng = _setup(dut)
        tb = AccelTB(dut, cfg, rng)
        await tb.start()
        # A STORE waiting for a token that never comes keeps the queues full.
        blocked = Store(rows=1, row_bytes=4, pop_prev=True)
        for _ in range(cfg.insn_queue_depth + 8):
            word = blocked.encode()
            for i in range(4):
                await tb.write_reg(0x10 + 4 * i, (word >> (32 * i)) & 0xFFFFFFFF)
        busy, errors = await tb.status()
        assert busy and "queue_overflow" in errors, errors

    async def run_compiled(
        tb: AccelTB, a: np.ndarray, b: np.ndarray, mode: str, trans_a: bool, trans_b: bool
    ) -> dict[str, int]:
        """Compile op(a) @ op(b), run it from DRAM to DRAM, compare with golden."""
        from cdm_qta.sw.runtime import compile_for

        program = compile_for(tb.cfg, a, b, mode, trans_a, trans_b)
        lay = program.layout
        image = lay.image(a, b)
        tb.dram_write(image.base, image.data)
        errors, counters = await tb.run(program.instructions)
        assert not errors, f"errors {errors}"
        got = lay.unpack_c(tb.dram_read(lay.c_base, lay.c_bytes))
        want = golden.gemm(a.T if trans_a else a, b.T if trans_b else b)
        np.testing.assert_array_equal(got, want)
        assert counters["macs"] == want.shape[0] * want.shape[1] * (
            b.shape[1] if trans_b else b.shape[0]
        )
        return counters

    @cocotb.test(timeout_time=TIMEOUT_MS * 20, timeout_unit="ms")
    async def random_gemms(dut: object) -> None:
        """Compiled GEMMs of random shapes (odd sizes, M/K/N = 1, transposes), both dataflows."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = AccelTB(dut, cfg, rng, pause=0.2)
        await tb.start()
        shapes = [(1, 1, 1), (1, 3 * n + 1, 2), (2 * n + 3, 4, n + 1), (n + 1, n - 1 or 1, 1)]
        shapes += [tuple(int(x) for x in rng.integers(1, 3 * n + 2, size=3)) for _ in range(4)]
        for i, (m, k, nn) in enumerate(shapes):
            mode = ("ws", "os")[i % 2]
            trans_a, trans_b = bool(rng.integers(2)), bool(rng.integers(2))
            a = golden.rand_int(rng, (k, m) if trans_a else (m, k))
            b = golden.rand_int(rng, (nn, k) if trans_b else (k, nn))
            counters = await run_compiled(tb, a, b, mode, trans_a, trans_b)
            dut._log.info(
                f"{mode} {m}x{k}x{nn} ta={trans_a} tb={trans_b}: {counters['cycles']} cycles"
            )

    @cocotb.test(timeout_time=TIMEOUT_MS * 20, timeout_unit="ms")
    async def loads_and_stores_overlap_compute(dut: object) -> None:
        """A multi-block GEMM: the engines' busy counters add up to more than the total."""
        cfg, rng = _setup(dut)
        n = cfg.n
        tb = AccelTB(dut, cfg, rng)
        await tb.start()
        m, k, nn = 6 * n, 3 * n, 3 * n
        a = golden.rand_int(rng, (m, k))
        b = golden.rand_int(rng, (k, nn))
        c = await run_compiled(tb, a, b, "ws", False, False)
        dut._log.info(f"counters: {c}")
        busy = c["load_busy"] + c["compute_busy"] + c["store_busy"]
        assert busy > 1.3 * c["cycles"], f"no overlap: engines busy {busy}, total {c['cycles']}"
        assert c["compute_busy"] < c["cycles"] and c["load_busy"] < c["cycles"]

    def random_stream(
        cfg: AcceleratorConfig, rng: np.random.Generator, blocks: int
    ) -> tuple[list, list[dict]]:
        """A legal stream of independent tiles with random extra dependencies and order.

        Each block is LOAD A, LOAD B (token to COMPUTE), COMPUTE (token to STORE), STORE, on
        its own SRAM rows and DRAM bytes, so every stored result is defined. On top, random
        COMPUTE->LOAD and STORE->COMPUTE tokens; the engines' instruction lists are merged in
        a random order that a sequential execution could complete (no pop of an empty token
        queue): any such stream must complete on the hardware whatever the engine speeds.
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
            la = dataclasses.replace(la, pop_next=bool(rng.random() < 0.5))
            rows["in"] += in_rows.shape[0]
            rows["w"] += k
            rows["out"] += m
            per_engine[0] += [la, lb]
            per_engine[1].append(comp)
            per_engine[2].append(st)
            specs.append(spec)
        # token queues: l2c, c2l, c2s, s2c
        pops = {
            0: {"pop_next": "c2l"},
            1: {"pop_prev": "l2c", "pop_next": "s2c"},
            2: {"pop_prev": "c2s"},
        }
        pushes = {
            0: {"push_next": "l2c"},
            1: {"push_prev": "c2l", "push_next": "c2s"},
            2: {"push_prev": "s2c"},
        }
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

    @cocotb.test(timeout_time=TIMEOUT_MS * 40, timeout_unit="ms")
    async def random_stream_stress(dut: object) -> None:
        """Random legal streams, random dependencies, random bus pauses: all complete, exact."""
        cfg, rng = _setup(dut)
        bus = cfg.dram_bus_bytes
        tb = AccelTB(dut, cfg, rng, pause=0.0)
        await tb.start()  # once: cocotbext-axi's reset handling is not cocotb-2 clean
        for _ in range(8):
            tb.set_pause(float(rng.uniform(0, 0.6)))
            program, specs = random_stream(cfg, rng, int(rng.integers(2, 7)))
            for spec in specs:
                tb.dram_write(
                    spec["a_addr"],
                    _pad(spec["in_rows"].astype(np.int8), _round(spec["in_rows"].shape[1], bus)),
                )
                b = spec["b"]
                tb.dram_write(spec["b_addr"], _pad(b.astype(np.int8), _round(b.shape[1], bus)))
            errors, counters = await tb.run(program)
            assert not errors, f"errors {errors} in\n" + "\n".join(map(str, program))
            for spec in specs:
                a, b = spec["a"], spec["b"]
                stride = _round(4 * b.shape[1], bus)
                raw = tb.dram_read(spec["c_addr"], a.shape[0] * stride)
                got = np.frombuffer(raw, dtype="<i4").reshape(a.shape[0], -1)[:, : b.shape[1]]
                np.testing.assert_array_equal(got, golden.gemm(a, b))
            dut._log.info(
                f"{len(program)} instructions, bus pauses {tb.pause:.2f}: "
                f"{counters['cycles']} cycles, exact"
            )


# ---------------------------------------------------------------------------------------------


ACCEL_CONFIGS = [
    AcceleratorConfig.small(4, dram_size=1 << 16),
    AcceleratorConfig.small(5, dram_size=1 << 16),  # rows of 5 and 20 bytes on an 8-byte bus
    AcceleratorConfig.small(8, rows=128, dram_size=1 << 16, insn_queue_depth=4),
]


@pytest.mark.sim
@pytest.mark.parametrize("cfg", ACCEL_CONFIGS, ids=lambda c: f"n{c.n}")
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_accelerator(sim: str, cfg: AcceleratorConfig) -> None:
    run_regression(SimTarget(sim, Top.ACCELERATOR, cfg), __name__)
