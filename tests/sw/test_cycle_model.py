"""The cycle model's structure, and a handful of numbers measured on the RTL.

``tests/rtl/test_cycle_model.py`` holds the model to the hardware's retire trace on random
programs; here the model is checked without a simulator: numbers pinned from earlier RTL runs
(each says where it was measured), and properties that follow from the hardware's structure
(fetch and DRAM latency, the array's closed forms, tokens, caching, every counter).
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from cdm_qta.hw import isa
from cdm_qta.hw.config import AcceleratorConfig, Dataflow, DramTiming
from cdm_qta.hw.isa import Buffer, Compute, Fence, Load, Store
from cdm_qta.hw.regs import COUNTERS
from cdm_qta.hw.timing import OsTile, WsTile, schedule
from cdm_qta.sw.compiler import compile_gemm
from cdm_qta.sw.cycle_model import DeadlockError, predict

#: The configuration of tests/rtl/test_cycle_model.py at N=4 (4-byte bus).
N4 = AcceleratorConfig.small(4, rows=64, dram_size=1 << 18)

#: Measured on the RTL (Verilator, N4, default DramTiming, fetched from the simulated DRAM):
#: program -> (``cycles`` counter, retire cycles per engine from the ``retire`` trace port).
MEASURED = {
    "fence": ([Fence()], 33, {"dispatch": [31]}),
    "ws_alone": ([Compute(k=4, m=10, c=4), Fence()], 62, {"compute": [59], "dispatch": [60]}),
    "ws_three": (
        [Compute(k=4, m=10, c=4)] * 3 + [Fence()],
        82,
        {"compute": [59, 69, 79], "dispatch": [80]},
    ),
    "os_two": (
        [
            Compute(dataflow=int(Dataflow.OS), k=7, m=4, c=3),
            Compute(dataflow=int(Dataflow.OS), k=2, m=4, c=4, accumulate=True),
            Fence(),
        ],
        59,
        {"compute": [52, 56], "dispatch": [57]},
    ),
    "ws_os_ws": (
        [
            Compute(k=3, m=5, c=4),
            Compute(dataflow=int(Dataflow.OS), k=6, m=2, c=4),
            Compute(k=4, m=2, c=2),
            Fence(),
        ],
        71,
        {"compute": [53, 62, 68], "dispatch": [69]},
    ),
    "fetch_bound": ([Compute(k=1, m=1, c=1)] * 20 + [Fence()], 126, {"dispatch": [124]}),
    "load_compute_store": (
        [
            Load(buffer=Buffer.INPUT, rows=8, row_bytes=4, stride=4),
            Load(buffer=Buffer.WEIGHT, rows=4, row_bytes=4, stride=4, push_next=True),
            Compute(k=4, m=8, c=4, pop_prev=True, push_next=True),
            Store(rows=8, row_bytes=16, dram_addr=0x1000, stride=16, pop_prev=True),
            Fence(),
        ],
        148,
        {"load": [66, 70], "compute": [96], "store": [145], "dispatch": [146]},
    ),
}

#: Measured on the RTL (Verilator, AcceleratorConfig.scaled(16), default DramTiming):
#: compiled GEMM (m, k, n, dataflow) -> ``cycles``.
MEASURED_GEMMS_N16 = {
    (1024, 4, 80, Dataflow.WS): 5926,
    (1024, 4, 80, Dataflow.OS): 5247,
    (1024, 10, 19, Dataflow.WS): 4229,
    (1024, 10, 19, Dataflow.OS): 3365,
    (300, 77, 40, Dataflow.WS): 5304,
    (300, 77, 40, Dataflow.OS): 4675,
}


def _retires(pred: object, program: list) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for insn, done in zip(program, pred.done, strict=True):  # type: ignore[attr-defined]
        eng = isa.engine_of(insn)
        out.setdefault(eng.name.lower() if eng is not None else "dispatch", []).append(done)
    return out


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_rtl_measured_programs(name: str) -> None:
    program, cycles, retired = MEASURED[name]
    pred = predict(N4, program)
    assert pred.cycles == cycles
    got = _retires(pred, program)
    for engine, want in retired.items():
        assert got[engine] == want, engine


def test_rtl_measured_counters() -> None:
    """Every counter the model predicts, as the RTL counted it (Verilator, N4)."""
    pred = predict(N4, MEASURED["load_compute_store"][0])
    measured = {
        "cycles": 148,
        "load_busy": 39,
        "load_wait_token": 0,
        "compute_busy": 57,
        "compute_wait_token": 31,
        "store_busy": 102,
        "store_wait_token": 53,
        "macs": 128,
        "insns_retired": 5,
        "dma_read_bytes": 48,
        "dma_write_bytes": 128,
    }
    assert {k: pred.counters[k] for k in measured} == measured


@pytest.mark.parametrize("shape", sorted(MEASURED_GEMMS_N16))
def test_rtl_measured_gemms(shape: tuple[int, int, int, Dataflow]) -> None:
    m, k, n, df = shape
    program = compile_gemm(AcceleratorConfig.scaled(16), m, k, n, dataflow=df)
    assert program.prediction.cycles == MEASURED_GEMMS_N16[shape]


#: N4 with 6 DMA bursts in flight (tests/rtl/test_cycle_model.py's STORE-addressing test), where
#: one more burst holds the next AW back, so the 4 KB split of STORE rows shows in the timing.
N4_QD6 = AcceleratorConfig.small(4, rows=64, dram_size=1 << 18, dma_outstanding=6)

#: Measured on the RTL (Icarus and Verilator, N4_QD6, default DramTiming): STOREs of 6 rows,
#: ``stride`` = 4 KB + 4, row ``r`` at ``dram_addr + r*stride`` -> (``cycles``, STORE retires).
MEASURED_STORES_ACROSS_4KB = {
    # 2-beat rows, only row 0 crosses 4 KB (a (r+1)*stride model splits none: 63, 60)
    (8, 0x1FFC): (67, 64),
    # 3-beat rows, rows 1 and 2 cross (a (r+1)*stride model splits rows 0 and 1: 72, 69)
    (12, 0x1FF4): (73, 70),
    # 2-beat rows, only row 5 crosses (a (r+1)*stride model splits rows 4 and 5: 68, 65)
    (8, 0x1FE8): (67, 64),
}


@pytest.mark.parametrize(("row_bytes", "dram_addr"), sorted(MEASURED_STORES_ACROSS_4KB))
def test_rtl_measured_store_rows_across_4kb(row_bytes: int, dram_addr: int) -> None:
    """STORE row ``r`` is at ``dram_addr + r*stride``, as the DMA's burst planner puts it."""
    store = Store(rows=6, row_bytes=row_bytes, dram_addr=dram_addr, stride=4096 + 4)
    pred = predict(N4_QD6, [store, Fence()])
    assert (pred.cycles, pred.done[0]) == MEASURED_STORES_ACROSS_4KB[row_bytes, dram_addr]


def test_every_counter_is_named_and_results_are_cached_copies() -> None:
    program = MEASURED["load_compute_store"][0]
    a = predict(N4, program)
    assert set(a.counters) == set(COUNTERS)
    unknown = {k for k, v in a.counters.items() if v is None}
    assert unknown == {"load_wait_bus", "store_wait_bus", "compute_wait_array"}
    a.counters["cycles"] = -1  # a caller's copy: the cache is not touched
    b = predict(N4, [i.encode() for i in program])  # words and instructions agree
    assert b.cycles == 148 and b.start == a.start and b.done == a.done


def test_fetch_and_dram_latency() -> None:
    """A lone FENCE: AR at 2, its beats L + 2 later, words 2 cycles after the last beat, the
    queue head 2 later, the counter 2 after the dispatch: ``L + beats + 9``."""
    for latency in (2, 20, 57):
        for cfg in (N4, AcceleratorConfig.small(16)):
            beats = max(1, 16 // cfg.dram_bus_bytes)
            pred = predict(cfg, [Fence()], DramTiming(read_latency=latency))
            assert pred.cycles == latency + beats + 9
    # A LOAD pays the latency twice: once to be fetched, once for its data.
    prog = [Load(rows=3, row_bytes=4, stride=4), Fence()]
    slow = predict(N4, prog, DramTiming(read_latency=30)).done[0]
    assert slow - predict(N4, prog).done[0] == 2 * 10
    # STOREs do not read: only the fetch's latency, plus the write latency once.
    prog = [Store(rows=2, row_bytes=16, dram_addr=0x1000, stride=16), Fence()]
    base = predict(N4, prog).done[0]
    assert predict(N4, prog, DramTiming(write_latency=17)).done[0] - base == 7
    assert predict(N4, prog, DramTiming(read_latency=25)).done[0] - base == 5


def test_fetch_bound_programs_retire_at_the_fetch_rate() -> None:
    """Tiny computes on a 4-byte bus: one 16-byte word per 4 bus cycles (measured above)."""
    done = predict(N4, MEASURED["fetch_bound"][0]).done[:-1]
    assert {b - a for a, b in itertools.pairwise(done)} == {4}


@pytest.mark.parametrize("mode", ["ws", "os", "mixed"])
def test_compute_engine_follows_the_array_schedule(mode: str) -> None:
    """With a bus wide enough that fetch keeps up, back-to-back computes retire exactly as
    :func:`cdm_qta.hw.timing.schedule` has their last outputs, one cycle later."""
    cfg = AcceleratorConfig.small(16)
    n = cfg.n
    shapes = {
        "ws": [WsTile(16, 40), WsTile(9, 3), WsTile(16, 70), WsTile(1, 20)],
        "os": [OsTile(40), OsTile(5), OsTile(33)],
        "mixed": [WsTile(16, 30), OsTile(20), WsTile(7, 12), OsTile(3), OsTile(18)],
    }[mode]
    program = []
    for t in shapes:
        if isinstance(t, WsTile):
            program.append(Compute(k=t.k, m=t.m, c=n))
        else:
            program.append(Compute(dataflow=int(Dataflow.OS), k=t.k, m=n, c=n))
    pred = predict(cfg, [*program, Fence()])
    timing = schedule(shapes, n)
    first_accept = min(timing[0].a_accepts + timing[0].b_accepts)
    offset = pred.start[0] + 4 - first_accept  # first beat 4 cycles after the take
    for tt, done in zip(timing, pred.done, strict=False):
        assert done == tt.last_output + 1 + offset


def test_tokens_order_the_engines_and_deadlocks_are_found() -> None:
    with pytest.raises(DeadlockError):
        predict(N4, [Compute(pop_prev=True), Fence()])
    with pytest.raises(DeadlockError):
        predict(N4, [Store(rows=1, row_bytes=4, pop_prev=True), Fence()])
    program = MEASURED["load_compute_store"][0]
    pred = predict(N4, program)
    assert pred.start[2] == pred.done[1] + 1  # the compute pops the weight load's token
    assert pred.start[3] == pred.done[2] + 1  # the store pops the compute's
    # A pop may wait for a push that comes later in program order.
    later = [Compute(k=1, m=1, c=1, pop_prev=True), Load(rows=1, row_bytes=4, push_next=True)]
    pred = predict(N4, [*later, Fence()])
    assert pred.start[0] == pred.done[1] + 1


def test_illegal_words_and_shapes_take_no_array_time() -> None:
    bad_opcode = 0b111
    pred = predict(N4, [bad_opcode, Fence()])
    assert pred.counters["insns_retired"] == 2 and pred.macs == 0
    skipped = predict(N4, [Compute(k=99, m=1, c=1), Fence()])
    assert skipped.macs == 0 and skipped.done[0] == skipped.start[0] + 1


def test_compiled_gemms_stream_at_the_arrays_rate() -> None:
    """A large WS GEMM at N=64 keeps the array busy: utilization close to the closed form."""
    cfg = AcceleratorConfig.scaled(64)
    prog = compile_gemm(cfg, 4096, 320, 320, dataflow=Dataflow.WS)
    assert prog.prediction.macs == 4096 * 320 * 320
    assert 0.8 < prog.prediction.utilization <= 1.0
    cached = predict(cfg, prog.instructions)
    assert dataclasses.asdict(cached) == dataclasses.asdict(prog.prediction)


@pytest.mark.parametrize(("n", "bus"), [(8, 8), (16, 32), (4, 4), (64, 128)])
def test_multi_beat_store_rows_jump_like_the_row_loop(
    n: int, bus: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The closed-form jump over STORE rows of several beats (every STORE row at N = 64, whose
    256-byte rows take two 128-byte beats) gives exactly what the row-by-row loop gives: every
    counter and every instruction's take and retire cycle. The RTL checks of the loop itself
    run at N <= 8 (tests/rtl/test_cycle_model.py), where these rows need a narrow bus."""
    from cdm_qta.sw import cycle_model

    base = AcceleratorConfig.scaled(n)
    cfg = dataclasses.replace(
        base,
        input_buffer_bytes=256 * n,
        weight_buffer_bytes=256 * n,
        output_buffer_bytes=1024 * n,
        dram_bus_bytes=bus,
    )
    jumps = 0
    steady = cycle_model._Model._store_steady_rows

    def counted(self: object, left: int, d: int) -> bool:
        nonlocal jumps
        jumped = steady(self, left, d)  # type: ignore[arg-type]
        jumps += jumped
        return jumped

    monkeypatch.setattr(cycle_model._Model, "_store_steady_rows", counted)
    for (m, k, c), df, timing in itertools.product(
        ((100, 30, 24), (300, 8, 60)),
        (Dataflow.WS, Dataflow.OS),
        (DramTiming(), DramTiming(read_latency=40, write_latency=30)),
    ):
        program = compile_gemm(cfg, m, k, c, dataflow=df).instructions
        got = {}
        for jump in (True, False):
            monkeypatch.setattr(cycle_model, "_STEADY_JUMP", jump)
            cycle_model._clear_cache()
            got[jump] = predict(cfg, program, timing)
        assert got[True].counters == got[False].counters, (m, k, c, df, timing)
        assert got[True].start == got[False].start
        assert got[True].done == got[False].done
    assert jumps > 0, "the sample must take the jump"


@pytest.mark.parametrize("df", [Dataflow.WS, Dataflow.OS])
def test_period_counters_of_the_whole_run_are_its_counters(df: Dataflow) -> None:
    """The rule that extends estimates by a period (sums over instructions, busy cycles inside
    a window) gives back every counter when the period is the whole program."""
    from cdm_qta.sw.cycle_model import period_counters

    cfg = AcceleratorConfig.scaled(8)
    program = compile_gemm(cfg, 100, 40, 30, dataflow=df)
    pred = program.prediction
    got = period_counters(pred, program.instructions, range(len(program.instructions)),
                          (-1, pred.cycles - 1))  # fmt: skip
    assert got == pred.counters
    # half the run: the busy cycles of both halves add up to the whole
    mid = pred.cycles // 2
    everything = range(len(program.instructions))
    a = period_counters(pred, program.instructions, everything, (-1, mid))
    b = period_counters(pred, program.instructions, everything, (mid, pred.cycles - 1))
    for e in ("load", "compute", "store"):
        assert a[f"{e}_busy"] + b[f"{e}_busy"] == pred.counters[f"{e}_busy"]
    assert 0 < a["compute_busy"] < pred.counters["compute_busy"]  # the cut is inside its span


def test_predict_encoded_is_predict() -> None:
    """The compiler's no-decode path predicts what decoding the words predicts."""
    from cdm_qta.sw import cycle_model
    from cdm_qta.sw.cycle_model import predict_encoded

    cfg = AcceleratorConfig.scaled(5)
    program = compile_gemm(cfg, 37, 23, 19, dataflow=Dataflow.OS).instructions
    words = [x.encode() for x in program]
    cycle_model._clear_cache()
    known = predict_encoded(cfg, words, program)
    cycle_model._clear_cache()
    assert predict(cfg, words) == known
    with pytest.raises(ValueError, match="words for"):
        predict_encoded(cfg, words[:-1], program)
