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

import os

import numpy as np
import pytest
from regression import require_simulator

from cdm_qta.hw import isa
from cdm_qta.hw.config import AcceleratorConfig, Dataflow, DramTiming
from cdm_qta.hw.isa import Buffer, Compute, Fence, Instruction, Load
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
