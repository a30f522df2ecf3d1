"""The cycle model against the RTL: every retire cycle and the ``cycles`` counter.

The accelerator's ``retire`` trace port (:data:`cdm_qta.hw.accelerator.RETIRE_BITS`) gives the
cycle each engine retired each instruction; :func:`cdm_qta.sw.cycle_model.predict` must give
the same cycles exactly for programs without DMA (compute and fences after the SRAMs were
filled by an earlier run: what is left is fetch, dispatch, tokens and the array), and the
same ``cycles`` counter within 2 % for compiled GEMMs and chained programs with DMA. One
simulator process per size runs every program (:class:`~cdm_qta.tb.session.SimSession`).
Timing does not depend on data, so the DRAM holds whatever earlier programs left there.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from regression import require_simulator

from cdm_qta.hw import isa
from cdm_qta.hw.config import AcceleratorConfig, Dataflow, DramTiming
from cdm_qta.hw.isa import Buffer, Compute, Fence, Instruction, Load, Store
from cdm_qta.sw.compiler import compile_gemm
from cdm_qta.sw.cycle_model import predict
from cdm_qta.sw.rtl_backend import cycle_budget
from cdm_qta.tb.session import SimSession
from cdm_qta.tb.sim_top import SimTopConfig
from cdm_qta.tb.targets import SimTarget, Top

ROWS = 64  #: SRAM rows per buffer (small configurations)
DRAM_BYTES = 1 << 18
#: Programs per kind; Icarus is 10-100x slower than Verilator, so it runs fewer.
COUNTS = {"verilator": (40, 12), "icarus": (10, 3)}
#: Largest whole-program error the model may make where it approximates bus sharing.
TOLERANCE = 0.02


def _seed() -> int:
    seed = int(os.environ.get("CDM_QTA_SEED", np.random.SeedSequence().entropy % 2**31))
    print(f"seed {seed} (rerun with CDM_QTA_SEED={seed})")
    return seed


def _words(program: list[Instruction]) -> list[int]:
    return [i.encode() for i in program]


def _model_retires(cfg: AcceleratorConfig, words: list[int]) -> tuple[int, dict[str, list[int]]]:
    """The model's ``cycles`` and per-engine retire cycles, in the trace port's form."""
    pred = predict(cfg, words, DramTiming())
    out: dict[str, list[int]] = {"load": [], "compute": [], "store": [], "dispatch": []}
    for word, done in zip(words, pred.done, strict=True):
        try:
            eng = isa.engine_of(isa.decode(word))
        except isa.IllegalInstruction:
            eng = None
        out[eng.name.lower() if eng is not None else "dispatch"].append(done)
    return pred.cycles, {k: sorted(v) for k, v in out.items()}


def _random_compute(cfg: AcceleratorConfig, rng: np.random.Generator) -> list[Instruction]:
    """Computes of random shapes, both dataflows, accumulating or not, some fences between."""
    n = cfg.n
    program: list[Instruction] = []
    for _ in range(int(rng.integers(1, 9))):
        ws = bool(rng.integers(2))
        c = int(rng.integers(1, n + 1))
        if ws:
            k, m = int(rng.integers(1, n + 1)), int(rng.integers(1, 3 * n + 1))
            a_rows = m
        else:
            k, m = int(rng.integers(1, 3 * n + 1)), int(rng.integers(1, n + 1))
            a_rows = k
        program.append(
            Compute(
                dataflow=int(Dataflow.WS if ws else Dataflow.OS),
                accumulate=bool(rng.integers(2)),
                a_row=int(rng.integers(0, ROWS - a_rows + 1)),
                b_row=int(rng.integers(0, ROWS - k + 1)),
                out_row=int(rng.integers(0, ROWS - m + 1)),
                k=k,
                m=m,
                c=c,
            )
        )
        if rng.random() < 0.15:
            program.append(Fence())
    if rng.random() < 0.9:
        program.append(Fence())
    return program


def _random_gemm(cfg: AcceleratorConfig, rng: np.random.Generator) -> list[Instruction]:
    n = cfg.n
    m, k, cols = (int(v) for v in rng.integers(1, 6 * n, size=3))
    df = Dataflow.WS if rng.integers(2) else Dataflow.OS
    ta, tb = (bool(v) for v in rng.integers(2, size=2))
    return list(compile_gemm(cfg, m, k, cols, dataflow=df, trans_a=ta, trans_b=tb).instructions)


@pytest.mark.sim
@pytest.mark.parametrize("n", [4, 5, 8])
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_cycle_model_matches_rtl(sim: str, n: int) -> None:
    require_simulator(sim)
    cfg = AcceleratorConfig.small(n, rows=ROWS, dram_size=DRAM_BYTES)
    target = SimTarget(sim, Top.ACCELERATOR, SimTopConfig(accel=cfg, dram_bytes=DRAM_BYTES))
    seed = _seed()
    rng = np.random.default_rng(seed)
    n_compute, n_dma = COUNTS[sim]
    with SimSession(target, label="cycle_model", options={"seed": seed}) as session:

        def run(words: list[int]) -> dict:
            return session.call("run", words=words, max_cycles=cycle_budget(cfg, words), trace=True)

        # Fill the SRAMs (their contents do not change any timing).
        fill = [
            Load(buffer=b, rows=ROWS, row_bytes=n, stride=cfg.dram_bus_bytes)
            for b in (Buffer.INPUT, Buffer.WEIGHT)
        ]
        run(_words([*fill, Fence()]))

        # 1. No DMA: fetch, dispatch and the compute engine, cycle for cycle.
        bad = []
        for i in range(n_compute):
            words = _words(_random_compute(cfg, rng))
            got = run(words)
            assert not got["errors"], got["errors"]
            cycles, retired = _model_retires(cfg, words)
            if cycles != got["counters"]["cycles"] or retired != got["retired"]:
                bad.append((i, isa.disassemble(words), cycles, retired, got))
        assert not bad, f"{len(bad)} of {n_compute} compute programs differ; first: {bad[0]}"

        # 2. With DMA: compiled GEMMs and chains of them, cycles within TOLERANCE.
        errors = []
        traced = 0
        for i in range(n_dma):
            program = _random_gemm(cfg, rng)
            if i % 3 == 2:  # a chain: two GEMMs back to back in one program
                program = program[:-1] + _random_gemm(cfg, rng)
            words = _words(program)
            got = run(words)
            assert not got["errors"], got["errors"]
            hw = got["counters"]["cycles"]
            model, retired = _model_retires(cfg, words)
            err = (model - hw) / hw
            errors.append(err)
            traced += retired == got["retired"]
            print(f"program {i}: {len(words)} insns, RTL {hw} cycles, model {model}, {err:+.3%}")
        worst = max(abs(e) for e in errors)
        exact = sum(e == 0 for e in errors)
        print(
            f"N={n}: {exact}/{len(errors)} DMA programs exact ({traced} with every retire "
            f"cycle), worst error {worst:.3%}"
        )
        assert worst <= TOLERANCE, f"worst error {worst:.3%} > {TOLERANCE:.0%}"


#: Bursts the DMA keeps in flight in the STORE-addressing test: few enough that one more burst
#: (a row split at 4 KB) holds the next AW back, so where the rows split shows in the retire
#: cycles (with the default 32 it never does on a full-rate DRAM), and enough for the
#: closed-form jump over rows of 3-4 beats (``wl + 3 <= beats * (QD - 1)``).
STORE_QD = 6
#: AXI4 page: no burst crosses a 4 KB boundary.
PAGE = 4096


def _store_cases(cfg: AcceleratorConfig, rng: np.random.Generator, count: int) -> list[list]:
    """STORE programs whose rows straddle 4 KB pages where it matters which address row ``r``
    has: the DMA puts row ``r`` at ``dram_addr + r*stride`` (hw/dma.py's planner: row 0 at
    ``dram_addr``, each next row ``stride`` further), so a model addressing row ``r`` at
    ``(r + 1)*stride`` splits other rows into bursts than the hardware does."""
    w, full = cfg.dram_bus_bytes, cfg.output_row_bytes
    two, three = 2 * w, min(3 * w, full)
    step = PAGE + w  # row r's page offset moves w per row
    rows = 6

    def fit(nbytes: int, r: int) -> int:
        """Page offset of row 0 such that row ``r``'s last beat ends at the page's end."""
        return PAGE - w * -(-nbytes // w) - r * w

    cases: list[list] = [
        # only row 0 crosses 4 KB (row r >= 1 starts (r - 1)*w bytes into a page)
        [Store(rows=rows, row_bytes=two, dram_addr=PAGE + fit(two, 0) + w, stride=step)],
        # row 0 ends on the page's end; rows 1 and 2 cross, 3.. do not
        [Store(rows=rows, row_bytes=three, dram_addr=PAGE + fit(three, 0), stride=step)],
        # no row crosses, but the row after the last one would (no timing difference here)
        [Store(rows=rows, row_bytes=three, dram_addr=PAGE + fit(three, rows - 1), stride=step)],
        # the last row is the only one to cross
        [Store(rows=rows, row_bytes=two, dram_addr=PAGE + fit(two, rows - 2), stride=step)],
        # full rows: one burst each, 4 KB apart, long enough for the closed-form jump
        [Store(rows=40, row_bytes=full, dram_addr=PAGE, stride=PAGE)],
        # full rows, each split at its page's end (4 KB stride: no jump, row by row)
        [Store(rows=40, row_bytes=full, dram_addr=2 * PAGE - two, stride=PAGE)],
        # full rows tiling the pages (stride dividing 4 KB), aligned to it: the jump again
        [Store(rows=40, row_bytes=full, dram_addr=PAGE, stride=1 << full.bit_length())],
    ]
    # several of them back to back, each from its own SRAM rows
    chain = [cases[k][0] for k in (0, 1, 3)]
    cases.append([dataclasses.replace(x, sram_row=8 * k) for k, x in enumerate(chain)])
    # random: rows near a page's end, any row length and any stride (multiples of the bus)
    for _ in range(count):
        program = []
        for _ in range(int(rng.integers(1, 4))):
            nrows = int(rng.integers(1, 13))
            nbytes = int(rng.integers(1, full + 1))
            stride = w * int(rng.integers(-(-nbytes // w), 2 * PAGE // w + 1))
            addr = PAGE * int(rng.integers(1, 8)) - w * int(rng.integers(1, 4 * (full // w) + 1))
            sram = int(rng.integers(0, ROWS - nrows + 1))
            program.append(
                Store(rows=nrows, row_bytes=nbytes, dram_addr=addr, stride=stride, sram_row=sram)
            )
        cases.append(program)
    for program in cases:
        for x in program:
            end = x.dram_addr + (x.rows - 1) * x.stride + x.row_bytes
            assert x.dram_addr % w == 0 and x.stride % w == 0 and end <= DRAM_BYTES - (1 << 16)
    return [[*program, Fence()] for program in cases]


@pytest.mark.sim
@pytest.mark.parametrize("n", [4, 5])
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_store_rows_are_addressed_like_the_dma(sim: str, n: int) -> None:
    """STOREs whose rows cross 4 KB pages: every retire cycle, ``cycles`` and every counter the
    model predicts equal the RTL's. Row ``r`` of a STORE is at ``dram_addr + r*stride``, as
    in a LOAD; the split of its rows into bursts at 4 KB boundaries is visible in the timing
    once the DMA's outstanding-burst limit binds (:data:`STORE_QD`)."""
    require_simulator(sim)
    cfg = AcceleratorConfig.small(n, rows=ROWS, dram_size=DRAM_BYTES, dma_outstanding=STORE_QD)
    target = SimTarget(sim, Top.ACCELERATOR, SimTopConfig(accel=cfg, dram_bytes=DRAM_BYTES))
    seed = _seed()
    rng = np.random.default_rng(seed)
    programs = _store_cases(cfg, rng, COUNTS[sim][1])
    with SimSession(target, label="cycle_model_store", options={"seed": seed}) as session:
        bad = []
        for i, program in enumerate(programs):
            words = _words(program)
            got = session.call("run", words=words, max_cycles=cycle_budget(cfg, words), trace=True)
            assert not got["errors"], (i, got["errors"])
            cycles, retired = _model_retires(cfg, words)
            pred = predict(cfg, words, DramTiming())
            counters = {k: v for k, v in pred.counters.items() if v is not None}
            hw = {k: got["counters"][k] for k in counters}
            if cycles != got["counters"]["cycles"] or retired != got["retired"] or counters != hw:
                bad.append((i, isa.disassemble(words), retired, got["retired"], counters, hw))
        assert not bad, f"{len(bad)} of {len(programs)} STORE programs differ; first: {bad[0]}"
