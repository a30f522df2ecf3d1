"""The compiler tiles any shape into a balanced, race-free, deadlock-free, aligned program."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from cdm_qta.golden.gemm import max_safe_reduction
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import Buffer, Compute, Fence, Instruction, Load, Store
from cdm_qta.sw.compiler import GemmProgram, ShapeError, choose_dataflow, compile_gemm
from cdm_qta.sw.cycle_model import DeadlockError, predict
from cdm_qta.sw.dependencies import ProgramError, assign_tokens, verify_program

CONFIGS = {
    "n2": AcceleratorConfig.small(2),
    "n4": AcceleratorConfig.small(4),
    "n5": AcceleratorConfig.small(5),
    "n8": AcceleratorConfig.small(8),
    "n4-tiny": AcceleratorConfig.small(4, rows=8),  # 4-row halves: many blocks, weight ring
    "n5-tiny": AcceleratorConfig.small(5, rows=10),
    "n64": AcceleratorConfig(),
}
SHAPES = [(1, 1, 1), (1, 7, 9), (9, 1, 6), (6, 9, 1), (13, 4, 11), (10, 11, 4), (17, 23, 19)]
BOTH = [Dataflow.WS, Dataflow.OS]


def compile_checked(cfg: AcceleratorConfig, *shape: int, **kw: object) -> GemmProgram:
    prog = compile_gemm(cfg, *shape, **kw)  # type: ignore[arg-type]
    check_invariants(prog)
    return prog


def check_invariants(prog: GemmProgram) -> None:
    """What every program must satisfy, whatever the shape and configuration."""
    cfg, w = prog.cfg, prog.cfg.dram_bus_bytes
    insns = prog.instructions
    assert isinstance(insns[-1], Fence)
    assert not any(isinstance(x, Fence) for x in insns[:-1])
    verify_program(cfg, insns)
    lo, hi = cfg.dram_base, cfg.dram_base + cfg.dram_size
    for x in insns:
        x.encode()  # every field fits
        if isinstance(x, Load | Store):
            assert x.dram_addr % w == 0 and x.stride % w == 0, x
            assert lo <= x.dram_addr and x.dram_addr + (x.rows - 1) * x.stride + x.row_bytes <= hi
            limit = cfg.n if isinstance(x, Load) else 4 * cfg.n
            assert 1 <= x.row_bytes <= limit, x
        if isinstance(x, Load):
            rows = cfg.input_rows if x.buffer == Buffer.INPUT else cfg.weight_rows
            assert x.sram_row + x.rows <= rows, x
        if isinstance(x, Store):
            assert x.sram_row + x.rows <= cfg.output_rows
        if isinstance(x, Compute):
            assert 1 <= x.c <= cfg.n
            assert (x.k <= cfg.n) if x.dataflow == Dataflow.WS else (x.m <= cfg.n)
    macs = sum(x.m * x.k * x.c for x in insns if isinstance(x, Compute))
    assert macs == prog.macs == prog.prediction.macs
    stored = sum(x.rows * x.row_bytes for x in insns if isinstance(x, Store))
    assert stored == 4 * prog.m * prog.n, "each output element is stored exactly once"


@pytest.mark.parametrize("dataflow", BOTH, ids=lambda d: d.name)
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_programs_are_valid(
    cfg: AcceleratorConfig, shape: tuple[int, int, int], dataflow: Dataflow
) -> None:
    compile_checked(cfg, *shape, dataflow=dataflow)


@pytest.mark.parametrize("trans", [(False, True), (True, False), (True, True)])
def test_transposes_only_change_the_layout_flags(trans: tuple[bool, bool]) -> None:
    cfg = CONFIGS["n5"]
    plain = compile_gemm(cfg, 11, 7, 13, dataflow=Dataflow.WS)
    flipped = compile_gemm(cfg, 11, 7, 13, dataflow=Dataflow.WS, trans_a=trans[0], trans_b=trans[1])
    assert flipped.instructions == plain.instructions
    assert (flipped.layout.trans_a, flipped.layout.trans_b) == trans


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((0, 4, 4), "m must be a positive integer"),
        ((4, -1, 4), "k must be a positive integer"),
        ((4, 4, 0), "n must be a positive integer"),
        ((4, max_safe_reduction() + 1, 4), "can overflow the INT32 accumulator"),
    ],
)
def test_bad_shapes_raise(shape: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        compile_gemm(CONFIGS["n4"], *shape, dataflow=Dataflow.WS)


def test_longest_safe_reduction_compiles() -> None:
    cfg = AcceleratorConfig.small(8, rows=4096)
    prog = compile_gemm(cfg, 1, max_safe_reduction(), 1, dataflow=Dataflow.OS)
    assert prog.k == 131071


def test_sram_too_small_raises_before_compiling() -> None:
    one_row = AcceleratorConfig.small(4, rows=1)
    for df in BOTH:
        with pytest.raises(ShapeError, match="double buffering needs at least 2 rows"):
            compile_gemm(one_row, 4, 4, 4, dataflow=df)
    few_weights = dataclasses.replace(AcceleratorConfig.small(8, rows=64), weight_buffer_bytes=64)
    with pytest.raises(ShapeError, match="WS weight tile of 8 rows needs 16"):
        compile_gemm(few_weights, 4, 8, 4, dataflow=Dataflow.WS)
    # a short reduction needs a shorter tile, so the same buffer works
    compile_checked(few_weights, 4, 4, 4, dataflow=Dataflow.WS)


def test_dram_window_too_small_raises() -> None:
    cfg = AcceleratorConfig.small(8, dram_size=4096)
    with pytest.raises(ShapeError, match=r"needs .* bytes of DRAM .* window holds only 4096"):
        compile_gemm(cfg, 64, 64, 64, dataflow=Dataflow.WS)
    compile_checked(cfg, 8, 8, 8, dataflow=Dataflow.WS)


def test_big_ws_gemm_keeps_compute_busy() -> None:
    """4096 x 320 x 320 at N=64: the benchmark shape; >= 90 % compute busy by the model."""
    cfg = AcceleratorConfig()
    prog = compile_checked(cfg, 4096, 320, 320, dataflow=Dataflow.WS)
    pred = prog.prediction
    print(prog.tiling, pred.summary())
    assert pred.compute_busy >= 0.9
    assert pred.utilization >= 0.9
    t = prog.tiling
    blocks, kt, nt = t.counts(4096, 320, 320, 64)
    assert (t.k_chunk, t.n_chunk) == (kt, nt), "input block resident across all column tiles"
    assert t.m_block * nt <= cfg.output_rows // 2, "an output block fits half the output buffer"
    loads = Counter(x.buffer for x in prog.instructions if isinstance(x, Load))
    assert loads[Buffer.INPUT] == blocks * kt, "each input tile loaded once"
    assert loads[Buffer.WEIGHT] <= blocks * kt * nt, "weights at most once per M block"
    assert sum(isinstance(x, Store) for x in prog.instructions) == blocks * nt


def test_weight_ring_reloads_once_per_block() -> None:
    cfg = dataclasses.replace(AcceleratorConfig.small(4, rows=64), weight_buffer_bytes=4 * 8)
    prog = compile_checked(cfg, 40, 16, 12, dataflow=Dataflow.WS)
    t = prog.tiling
    assert not t.weights_resident and t.weight_slots == 2
    blocks, kt, nt = t.counts(40, 16, 12, 4)
    loads = Counter(x.buffer for x in prog.instructions if isinstance(x, Load))
    assert loads[Buffer.WEIGHT] == blocks * kt * nt


@pytest.mark.parametrize("dataflow", BOTH, ids=lambda d: d.name)
def test_double_buffering_overlaps_engines(dataflow: Dataflow) -> None:
    cfg = AcceleratorConfig.small(4, rows=16)
    prog = compile_checked(cfg, 64, 12, 12, dataflow=dataflow)
    pred = prog.prediction
    halves = {
        x.sram_row // (cfg.input_rows // 2)
        for x in prog.instructions
        if isinstance(x, Load) and x.buffer == Buffer.INPUT
    }
    assert halves == {0, 1}
    outs = {x.sram_row // (cfg.output_rows // 2) for x in prog.instructions if isinstance(x, Store)}
    assert outs == {0, 1}
    assert pred.cycles < sum(pred.busy.values()), "engines must overlap"


def test_every_token_is_needed() -> None:
    """Dropping a pop is caught (a race or unbalanced tokens); so is dropping a matched pair."""
    cfg = AcceleratorConfig.small(4, rows=8)
    prog = compile_checked(cfg, 12, 9, 7, dataflow=Dataflow.WS)
    insns = list(prog.instructions)
    pops = [(i, f) for i, x in enumerate(insns) for f in ("pop_prev", "pop_next") if getattr(x, f)]
    assert pops
    for i, flag in pops[:: max(1, len(pops) // 12)]:
        broken = list(insns)
        broken[i] = dataclasses.replace(insns[i], **{flag: False})
        with pytest.raises(ProgramError, match=r"unbalanced tokens|data race"):
            verify_program(cfg, broken)
    # remove the first compute->load pair: the reload of that buffer half now races
    pop_i = next(i for i, x in enumerate(insns) if isinstance(x, Load) and x.pop_next)
    push_i = next(i for i, x in enumerate(insns) if isinstance(x, Compute) and x.push_prev)
    broken = list(insns)
    broken[pop_i] = dataclasses.replace(insns[pop_i], pop_next=False)
    broken[push_i] = dataclasses.replace(insns[push_i], push_prev=False)
    with pytest.raises(ProgramError, match="data race on the input buffer"):
        verify_program(cfg, broken)


def test_verify_rejects_bad_streams() -> None:
    cfg = CONFIGS["n4"]
    with pytest.raises(ProgramError, match="end with a FENCE"):
        verify_program(cfg, [Load(row_bytes=4)])
    with pytest.raises(ProgramError, match="before any matching push"):
        verify_program(cfg, [Compute(pop_prev=True), Load(row_bytes=4, push_next=True), Fence()])
    with pytest.raises(ProgramError, match="illegal for its engine"):
        verify_program(cfg, [Load(row_bytes=4, pop_prev=True), Fence()])
    with pytest.raises(ProgramError, match="illegal for its engine"):
        verify_program(cfg, [Fence(push_next=True)])
    with pytest.raises(ProgramError, match="unknown opcode"):
        verify_program(cfg, [0, Fence().encode()])


def test_assign_tokens_orders_a_hand_written_program() -> None:
    cfg = CONFIGS["n4"]
    body: list[Instruction] = [
        Load(buffer=Buffer.INPUT, rows=2, row_bytes=4),
        Load(buffer=Buffer.WEIGHT, rows=4, row_bytes=4),
        Compute(k=4, m=2, c=4),
        Store(rows=2, row_bytes=16, dram_addr=0x100, stride=16),  # DRAM apart from the loads
        Load(buffer=Buffer.INPUT, rows=2, row_bytes=4),  # overwrites what the compute read
        Compute(k=4, m=2, c=4),  # overwrites what the store read
    ]
    out = assign_tokens(cfg, body)
    assert out[1].push_next and not out[0].push_next, "one token covers both loads"
    assert out[2].pop_prev and out[2].push_next and out[2].push_prev
    assert out[3].pop_prev and out[3].push_prev
    assert out[4].pop_next and out[4].push_next
    assert out[5].pop_prev and out[5].pop_next
    report = verify_program(cfg, [*out, Fence()])
    assert report.tokens == {
        "load->compute": 2,
        "compute->load": 1,
        "compute->store": 1,
        "store->compute": 1,
    }


def test_cycle_model_detects_deadlock_and_matches_timing() -> None:
    cfg = CONFIGS["n4"]
    with pytest.raises(DeadlockError):
        predict(cfg, [Compute(pop_prev=True), Fence()])
    from cdm_qta.hw.timing import ws_cycles

    # Measured on the RTL (Verilator, N=4, 4-byte bus, fetched from the simulated DRAM): the
    # compute retires in cycle 59, the counter reads 62; three tiles: 79 and 82. The array's
    # part is the closed form: first beat 4 cycles after the take, retire after the last row.
    alone = predict(cfg, [Compute(k=4, m=10, c=4), Fence()])
    assert (alone.done[0], alone.cycles) == (59, 62)
    assert alone.done[0] - (alone.start[0] + 4) == ws_cycles(4, 4, 10)
    three = predict(cfg, [Compute(k=4, m=10, c=4)] * 3 + [Fence()])
    assert (three.done[2], three.cycles) == (79, 82)
    assert three.done[2] - (three.start[0] + 4) == ws_cycles(4, 4, 10, tiles=3)


def test_auto_picks_what_the_rtl_measured_faster() -> None:
    """Shapes whose faster dataflow the RTL measured (Verilator, ``scaled(16)``, the paper's
    shapes / 4, after LOAD/STORE were pipelined): LoRA up 1024x4x80 WS 5,926 vs OS 5,247
    cycles; QK^T 1024x10x19 WS 4,229 vs OS 3,365. (Issue 4's RTL, which waited for each
    transfer, ranked both WS first: 5,986 vs 11,613 and 4,186 vs 5,273. The old estimate got
    those wrong; the exact model follows the RTL either way. tests/rtl/test_cycle_model.py
    checks the model against hardware counters on compiled GEMMs.)"""
    cfg = AcceleratorConfig.scaled(16)
    best, cands = choose_dataflow(cfg, 1024, 4, 80)
    assert best.dataflow == Dataflow.OS
    assert {d: c.prediction.cycles for d, c in cands.items()} == {  # type: ignore[union-attr]
        Dataflow.WS: 5926,
        Dataflow.OS: 5247,
    }
    best, cands = choose_dataflow(cfg, 1024, 10, 19)
    assert best.dataflow == Dataflow.OS
    assert {d: c.prediction.cycles for d, c in cands.items()} == {  # type: ignore[union-attr]
        Dataflow.WS: 4229,
        Dataflow.OS: 3365,
    }


def test_auto_falls_back_when_one_dataflow_cannot_fit() -> None:
    cfg = dataclasses.replace(AcceleratorConfig.small(8, rows=64), weight_buffer_bytes=8 * 8)
    best, cands = choose_dataflow(cfg, 16, 64, 16)
    assert isinstance(cands[Dataflow.WS], ShapeError)
    assert best.dataflow == Dataflow.OS
