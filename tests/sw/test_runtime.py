"""The golden back end runs compiled GEMMs bit-exactly, under any engine interleaving."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from numpy.typing import NDArray

from cdm_qta.golden.gemm import gemm, rand_int
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.isa import Buffer, Compute, Fence, Instruction, Load, Store
from cdm_qta.sw.backend import Backend, RunStats
from cdm_qta.sw.compiler import compile_gemm
from cdm_qta.sw.dram import DramImage
from cdm_qta.sw.golden_backend import GoldenBackend
from cdm_qta.sw.runtime import execute, run_gemm

CONFIGS = {
    "n2": AcceleratorConfig.small(2),
    "n4": AcceleratorConfig.small(4),
    "n5": AcceleratorConfig.small(5),
    "n8": AcceleratorConfig.small(8),
    "n4-tiny": AcceleratorConfig.small(4, rows=8),
    "n5-tiny": AcceleratorConfig.small(5, rows=10),
    "n3-ring": dataclasses.replace(AcceleratorConfig.small(3, rows=12), weight_buffer_bytes=3 * 6),
}
SPECIAL = [(1, 1, 1), (1, 9, 7), (8, 1, 6), (7, 6, 1), (9, 4, 10), (12, 10, 4), (4, 4, 4)]
TRANS = [(False, False), (False, True), (True, False), (True, True)]


def operands(
    rng: np.random.Generator, m: int, k: int, n: int, ta: bool, tb: bool
) -> tuple[NDArray[np.int8], NDArray[np.int8], NDArray[np.int64]]:
    a = rand_int(rng, (k, m) if ta else (m, k)).astype(np.int8)
    b = rand_int(rng, (n, k) if tb else (k, n)).astype(np.int8)
    return a, b, gemm(a.T if ta else a, b.T if tb else b)


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_random_shapes_bit_exact(cfg: AcceleratorConfig, dataflow: str) -> None:
    seed = 20260 + cfg.n * 7 + cfg.input_rows + (dataflow == "os")
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    shapes = [
        *SPECIAL,
        *(tuple(int(v) for v in rng.integers(1, 4 * cfg.n + 6, 3)) for _ in range(6)),
    ]
    for i, (m, k, n) in enumerate(shapes):
        ta, tb = TRANS[i % 4]
        a, b, ref = operands(rng, m, k, n, ta, tb)
        c, stats = run_gemm(GoldenBackend(cfg), cfg, a, b, dataflow, ta, tb)
        assert stats.ok, stats.error_log
        np.testing.assert_array_equal(c, ref, err_msg=f"{(m, k, n)} ta={ta} tb={tb}")
        assert c.dtype == np.int32
        assert stats.macs == m * k * n


@pytest.mark.parametrize("seed", range(6))
def test_adversarial_interleavings(seed: int) -> None:
    """Random engine schedules with reads at start and writes at finish: still bit-exact."""
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    cfg = CONFIGS["n4-tiny"] if seed % 2 else CONFIGS["n3-ring"]
    m, k, n = (int(v) for v in rng.integers(1, 20, 3))
    ta, tb = TRANS[seed % 4]
    a, b, ref = operands(rng, m, k, n, ta, tb)
    for df in (Dataflow.WS, Dataflow.OS):
        prog = compile_gemm(cfg, m, k, n, dataflow=df, trans_a=ta, trans_b=tb)
        for sched_seed in range(8):
            be = GoldenBackend(cfg, scheduler=random.Random(sched_seed), predict_cycles=False)
            c, stats = execute(be, prog, a, b)
            assert stats.ok
            np.testing.assert_array_equal(c, ref, err_msg=f"{df.name} schedule {sched_seed}")


def test_a_missing_token_is_caught_by_some_interleaving() -> None:
    """The two-phase simulation really exercises races: drop a load->compute token pair."""
    cfg = CONFIGS["n4-tiny"]
    rng = np.random.default_rng(3)
    a, b, ref = operands(rng, 12, 9, 7, False, False)
    prog = compile_gemm(cfg, 12, 9, 7, dataflow=Dataflow.WS)
    insns = list(prog.instructions)
    push_i = max(i for i, x in enumerate(insns) if isinstance(x, Load) and x.push_next)
    pop_i = max(i for i, x in enumerate(insns) if isinstance(x, Compute) and x.pop_prev)
    insns[push_i] = dataclasses.replace(insns[push_i], push_next=False)
    insns[pop_i] = dataclasses.replace(insns[pop_i], pop_prev=False)
    broken = dataclasses.replace(prog, instructions=tuple(insns))
    wrong = 0
    for s in range(30):
        be = GoldenBackend(cfg, scheduler=random.Random(s), predict_cycles=False)
        c, _ = execute(be, broken, a, b)
        wrong += not np.array_equal(c, ref)
    assert wrong > 0


def test_deadlock_is_reported_not_hung() -> None:
    be = GoldenBackend(CONFIGS["n4"])
    stats = be.run([Load(row_bytes=4, pop_next=True), Compute(pop_prev=True), Fence()])
    assert stats.errors["deadlock"] == 1 and sum(stats.errors.values()) == 1
    assert "every engine waits" in stats.error_log[0]
    assert stats.insns_retired == 0 and stats.dma_read_bytes == 0, "nothing started"


def run_one(cfg: AcceleratorConfig, program: list[Instruction | int]) -> RunStats:
    be = GoldenBackend(cfg)
    be.load(DramImage(cfg.dram_base, np.arange(256, dtype=np.uint8)))
    return be.run(program)


@pytest.mark.parametrize(
    ("insn", "kind"),
    [
        (Load(row_bytes=4, dram_addr=2), "dma_align"),
        (Load(row_bytes=4, stride=6, rows=2), "dma_align"),
        (Load(row_bytes=0), "dma_align"),
        (Load(row_bytes=5), "dma_align"),
        (Load(row_bytes=4, sram_row=255, rows=2), "load_range"),
        (Load(row_bytes=4, dram_addr=1 << 30), "dma_window"),
        (Store(row_bytes=17), "dma_align"),
        (Store(row_bytes=16, dram_addr=(1 << 30) - 8), "dma_window"),
        (Compute(dataflow=Dataflow.WS, k=5, m=1, c=1), "compute_range"),
        (Compute(dataflow=Dataflow.OS, k=1, m=5, c=1), "compute_range"),
        (Compute(c=0), "compute_range"),
        (Compute(k=4, m=2, c=4, out_row=255), "compute_range"),
        (Load(row_bytes=4, pop_prev=True), "illegal_insn"),
        (Store(row_bytes=4, push_next=True), "illegal_insn"),
        (Fence(push_prev=True), "illegal_insn"),
        (0, "illegal_insn"),
        (7 | (1 << 60), "illegal_insn"),
        (Load(rows=0, row_bytes=4), "load_range"),
        (Store(rows=0, row_bytes=4), "store_range"),
    ],
)
def test_illegal_instructions_set_an_error_and_are_skipped(
    insn: Instruction | int, kind: str
) -> None:
    stats = run_one(CONFIGS["n4"], [insn, Fence()])
    assert stats.errors[kind] == 1
    assert sum(stats.errors.values()) == 1
    assert not stats.ok and kind in stats.error_log[0]
    assert stats.insns_retired == 2
    assert stats.macs == stats.dma_read_bytes == stats.dma_write_bytes == 0


def test_skipped_instruction_still_pushes_its_tokens() -> None:
    cfg = CONFIGS["n4"]
    stats = run_one(
        cfg,
        [
            Load(row_bytes=4, dram_addr=3, push_next=True),  # misaligned: skipped, token pushed
            Compute(k=1, m=1, c=1, pop_prev=True, push_next=True),
            Store(row_bytes=4, dram_addr=64, pop_prev=True),
            Fence(),
        ],
    )
    assert stats.errors["dma_align"] == 1
    assert stats.macs == 1 and stats.dma_write_bytes == 4 and stats.insns_retired == 4


def test_load_compute_store_semantics() -> None:
    """WS and OS on hand-placed rows, accumulate, partial store rows: the ISA text, literally."""
    cfg = CONFIGS["n4"]
    be = GoldenBackend(cfg)
    a = np.array([[1, -2, 3], [4, 5, -6]], dtype=np.int8)  # 2 x 3
    w = np.array([[1, 2], [3, 4], [-128, 127]], dtype=np.int8)  # 3 x 2
    img = DramImage.zeros(0, 256)
    for r in range(2):
        img.write(8 * r, a[r].view(np.uint8))
    for r in range(3):
        img.write(32 + 8 * r, w[r].view(np.uint8))
    for t in range(3):
        img.write(64 + 8 * t, a[:, t].copy().view(np.uint8))  # columns of A for OS
    be.load(img)
    prog: list[Instruction] = [
        Load(buffer=Buffer.INPUT, sram_row=0, rows=2, row_bytes=3, dram_addr=0, stride=8),
        Load(buffer=Buffer.WEIGHT, sram_row=4, rows=3, row_bytes=2, dram_addr=32, stride=8),
        Load(buffer=Buffer.INPUT, sram_row=8, rows=3, row_bytes=2, dram_addr=64, stride=8),
        Fence(),
        Compute(dataflow=Dataflow.WS, a_row=0, b_row=4, out_row=1, k=3, m=2, c=2),
        Compute(dataflow=Dataflow.OS, accumulate=True, a_row=8, b_row=4, out_row=1, k=3, m=2, c=2),
        Fence(),
        Store(sram_row=1, rows=2, row_bytes=8, dram_addr=128, stride=16),
        Store(sram_row=1, rows=1, row_bytes=5, dram_addr=160, stride=0),
        Fence(),
    ]
    stats = be.run(prog)
    assert stats.ok and stats.macs == 24 and stats.insns_retired == 10
    ref = 2 * gemm(a, w)
    got = np.frombuffer(be.read(128, 32), dtype="<i4").reshape(2, 4)[:, :2]
    np.testing.assert_array_equal(got, ref)
    assert be.read(160, 5) == ref[0].astype("<i4").tobytes()[:5]
    assert be.read(165, 3) == b"\0\0\0"
    assert stats.dma_read_bytes == 6 + 6 + 6 and stats.dma_write_bytes == 16 + 5
    assert stats.timing == "model" and stats.cycles is not None


def test_backend_interface() -> None:
    with pytest.raises(TypeError):
        Backend(CONFIGS["n4"])  # type: ignore[abstract]
    cfg = CONFIGS["n4"]
    with GoldenBackend(cfg) as be:
        be.load(DramImage(4096, np.arange(10, dtype=np.uint8)))
        assert be.read(4098, 3) == bytes([2, 3, 4])
        assert be.read(1 << 20, 2) == b"\0\0", "untouched DRAM reads as zero"
        with pytest.raises(ValueError, match="outside the DRAM window"):
            be.read(cfg.dram_size - 1, 2)
        stats = be.run([Fence()])
        assert stats.insns_retired == 1 and stats.ok
    other = GoldenBackend(CONFIGS["n5"])
    prog = compile_gemm(cfg, 2, 2, 2, dataflow=Dataflow.WS)
    with pytest.raises(ValueError, match="different configurations"):
        execute(other, prog, np.zeros((2, 2), np.int8), np.zeros((2, 2), np.int8))


def test_run_gemm_rejects_bad_operands() -> None:
    cfg = CONFIGS["n4"]
    be = GoldenBackend(cfg)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        run_gemm(be, cfg, np.zeros((2, 3), np.int8), np.zeros((2, 3), np.int8), "ws")
    with pytest.raises(ValueError, match="ws, os or auto"):
        run_gemm(be, cfg, np.zeros((2, 3), np.int8), np.zeros((3, 2), np.int8), "xs")
    with pytest.raises(ValueError, match="int8 range"):
        run_gemm(be, cfg, np.full((2, 3), 200), np.zeros((3, 2), np.int8), "ws")


def test_run_gemm_stats_on_the_paper_config() -> None:
    cfg = AcceleratorConfig()
    rng = np.random.default_rng(11)
    a, b, ref = operands(rng, 200, 130, 70, True, False)
    c, stats = run_gemm(GoldenBackend(cfg), cfg, a, b, "auto", True, False)
    np.testing.assert_array_equal(c, ref)
    assert stats.cycles and 0 < stats.utilization(64)  # type: ignore[operator]
    assert stats.engines["load"].keys() == {"busy", "wait_token", "wait_bus"}
    assert stats.engines["compute"].keys() == {"busy", "wait_token", "wait_array"}
    assert stats.engines["store"].keys() == {"busy", "wait_token", "wait_bus"}
    assert stats.dma_write_bytes == 200 * 70 * 4
