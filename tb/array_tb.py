"""Cocotb driver, monitor and scoreboard for :class:`~cdm_qta.hw.core.ArrayCore`.

The testbench speaks in tiles (:class:`WsOp`, :class:`OsOp`) that carry real operands; it turns
them into beats exactly as the protocol in :mod:`cdm_qta.hw.core` says, drives both streams
every cycle as fast as the core accepts them (optionally with random bubbles), records in which
cycle every beat was accepted and every output row left, and checks the results against
:func:`cdm_qta.golden.gemm` and the timeline against :func:`cdm_qta.hw.timing.schedule`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from cdm_qta import golden
from cdm_qta.hw.config import ArrayConfig, Dataflow
from cdm_qta.hw.layouts import beat_layout, output_layout
from cdm_qta.hw.timing import OsTile, TileTiming, WsTile, schedule

from .stimulus import start_clock

__all__ = ["ArrayTB", "OsOp", "RunResult", "WsOp", "random_op"]


@dataclasses.dataclass(frozen=True)
class WsOp:
    """``a @ w`` in weight-stationary mode: ``w`` (K x C) held in the PEs, rows of ``a`` stream."""

    a: NDArray[np.int64]
    w: NDArray[np.int64]

    @property
    def tile(self) -> WsTile:
        return WsTile(k=self.w.shape[0], m=self.a.shape[0])

    def expected(self, cfg: ArrayConfig) -> NDArray[np.int64]:
        return golden.gemm(self.a, self.w, operand_bits=cfg.operand_bits, acc_bits=cfg.acc_bits)


@dataclasses.dataclass(frozen=True)
class OsOp:
    """``a @ b`` in output-stationary mode: an up-to-N x N output tile accumulates in the PEs."""

    a: NDArray[np.int64]
    b: NDArray[np.int64]

    @property
    def tile(self) -> OsTile:
        return OsTile(k=self.a.shape[1])

    def expected(self, cfg: ArrayConfig) -> NDArray[np.int64]:
        return golden.gemm(self.a, self.b, operand_bits=cfg.operand_bits, acc_bits=cfg.acc_bits)


Op = WsOp | OsOp


def random_op(
    rng: np.random.Generator,
    cfg: ArrayConfig,
    mode: Dataflow,
    *,
    k: int | None = None,
    m: int | None = None,
    cols: int | None = None,
    max_stream: int | None = None,
) -> Op:
    """A random tile; unspecified sizes are drawn over their whole legal range."""
    n = cfg.n
    longest = max_stream or 3 * n
    cols = cols or int(rng.integers(1, n + 1))
    if mode == Dataflow.WS:
        k = k or int(rng.integers(1, n + 1))
        m = m or int(rng.integers(1, longest + 1))
        a = golden.rand_int(rng, (m, k), cfg.operand_bits)
        return WsOp(a=a, w=golden.rand_int(rng, (k, cols), cfg.operand_bits))
    k = k or int(rng.integers(1, longest + 1))
    m = m or int(rng.integers(1, n + 1))
    a = golden.rand_int(rng, (m, k), cfg.operand_bits)
    return OsOp(a=a, b=golden.rand_int(rng, (k, cols), cfg.operand_bits))


@dataclasses.dataclass
class RunResult:
    """What happened on the wire: accept cycles per stream and every output row."""

    a_accepts: list[int]
    b_accepts: list[int]
    out_cycles: list[int]
    out_rows: NDArray[np.int64]  # (rows, N)
    out_last: list[bool]
    cycles: int  # first accepted beat .. last output row, inclusive


def read_unsigned(signal: object, what: str) -> int:
    """A wide signal's value as an int, failing on X/Z bits.

    ``signal.value`` builds one Python object per bit (a LogicArray), which for a 2 kbit output
    row costs more than simulating the whole array for a cycle; the simulator's binary string is
    read directly when cocotb exposes it.
    """
    raw_handle = getattr(signal, "_handle", None)
    if raw_handle is not None and hasattr(raw_handle, "get_signal_val_binstr"):
        bits = raw_handle.get_signal_val_binstr()
        try:
            return int(bits, 2)
        except ValueError:
            raise AssertionError(f"{what} has X/Z bits: {bits}") from None
    value = signal.value
    if not value.is_resolvable:
        raise AssertionError(f"{what} has X/Z bits: {value}")
    return value.to_unsigned()


class BeatCodec:
    """Pack beats and unpack output rows with the offsets of the hardware's own layouts."""

    def __init__(self, cfg: ArrayConfig) -> None:
        self.cfg = cfg
        beat = beat_layout(cfg)
        out = output_layout(cfg)
        self._lanes_at = beat["lanes"].offset
        self._mode_at = beat["mode"].offset
        self._last_at = beat["last"].offset
        self._out_last_at = out["last"].offset

    def beat(self, lanes: NDArray[np.int64], count: int, mode: Dataflow, last: bool) -> int:
        word = golden.pack(lanes, self.cfg.operand_bits)
        return (
            word
            | (count << self._lanes_at)
            | (int(mode) << self._mode_at)
            | (int(last) << self._last_at)
        )

    def output(self, word: int) -> tuple[NDArray[np.int64], bool]:
        row = golden.unpack(word & ((1 << self._out_last_at) - 1), self.cfg.acc_bits, self.cfg.n)
        return row, bool((word >> self._out_last_at) & 1)


class ArrayTB:
    """Owns the clock, reset, both input streams and the output monitor of one ArrayCore."""

    def __init__(self, dut: object, cfg: ArrayConfig, rng: np.random.Generator) -> None:
        self.dut = dut
        self.cfg = cfg
        self.rng = rng
        self.codec = BeatCodec(cfg)
        self._check_ports()

    def _check_ports(self) -> None:
        """The config travels by environment; make sure it describes the Verilog we got."""
        got = len(self.dut.a__payload)
        want = beat_layout(self.cfg).size
        if got != want:
            raise AssertionError(f"a__payload is {got} bits, config {self.cfg} expects {want}")

    async def start(self) -> None:
        from cocotb.triggers import Timer

        # Inputs are defined before the first clock edge: an X latched into a weight bank would
        # turn `0 * X` into X in the simulator although real hardware computes 0.
        for name in ("a__payload", "b__payload", "a__valid", "b__valid"):
            getattr(self.dut, name).value = 0
        self.dut.rst.value = 1
        await Timer(1, unit="ns")
        start_clock(self.dut)
        await self.reset()

    async def reset(self, cycles: int = 2) -> None:
        from cocotb.triggers import ClockCycles, RisingEdge

        self.dut.a__valid.value = 0
        self.dut.b__valid.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    # -- beats ---------------------------------------------------------------------------

    def _garbage(self, shape: tuple[int, ...]) -> NDArray[np.int64]:
        """Random junk for the lanes a tile does not use: the core must ignore it."""
        return golden.rand_int(self.rng, shape, self.cfg.operand_bits)

    def beats(self, ops: Sequence[Op]) -> tuple[list[int], list[int]]:
        """The ``a`` and ``b`` beat streams of a program, unused lanes filled with junk."""
        n = self.cfg.n
        a_beats: list[int] = []
        b_beats: list[int] = []
        for op in ops:
            if isinstance(op, WsOp):
                k, cols = op.w.shape
                b_lanes = self._garbage((k, n))
                b_lanes[:, :cols] = op.w
                a_lanes = self._garbage((op.a.shape[0], n))
                a_lanes[:, :k] = op.a
                b_beats += [
                    self.codec.beat(row, cols, Dataflow.WS, i == k - 1)
                    for i, row in enumerate(b_lanes)
                ]
                m = op.a.shape[0]
                a_beats += [
                    self.codec.beat(row, k, Dataflow.WS, i == m - 1)
                    for i, row in enumerate(a_lanes)
                ]
            else:
                m, k = op.a.shape
                cols = op.b.shape[1]
                if m > n or cols > n:
                    raise ValueError(f"an OS tile is at most {n} x {n}, not {m} x {cols}")
                a_lanes = self._garbage((k, n))
                a_lanes[:, :m] = op.a.T
                b_lanes = self._garbage((k, n))
                b_lanes[:, :cols] = op.b
                a_beats += [
                    self.codec.beat(col, m, Dataflow.OS, i == k - 1)
                    for i, col in enumerate(a_lanes)
                ]
                b_beats += [
                    self.codec.beat(row, cols, Dataflow.OS, i == k - 1)
                    for i, row in enumerate(b_lanes)
                ]
        return a_beats, b_beats

    def output_rows(self, ops: Sequence[Op]) -> int:
        return sum(op.a.shape[0] if isinstance(op, WsOp) else self.cfg.n for op in ops)

    # -- driving -------------------------------------------------------------------------

    async def drive(
        self,
        a_beats: Sequence[int],
        b_beats: Sequence[int],
        *,
        expect_rows: int,
        pause: Iterator[bool] | None = None,
        stop_after: int | None = None,
        max_cycles: int = 1_000_000,
    ) -> RunResult:
        """Present both streams every cycle and collect outputs until ``expect_rows`` arrived.

        ``pause`` yields True for cycles in which a stream that has no beat on the wire holds
        ``valid`` low (a bubble); a presented beat stays valid until accepted, as the stream
        protocol demands. ``stop_after`` abandons the run after that many cycles (to test reset
        in the middle of an operation).
        """
        from cocotb.triggers import ReadOnly, RisingEdge

        dut = self.dut
        a_acc: list[int] = []
        b_acc: list[int] = []
        out_cycles: list[int] = []
        out_words: list[int] = []
        ai = bi = 0
        a_on = b_on = False  # a beat is on the wire, waiting to be accepted
        cycle = 0
        while len(out_words) < expect_rows or ai < len(a_beats) or bi < len(b_beats):
            if stop_after is not None and cycle >= stop_after:
                break
            if cycle >= max_cycles:
                raise AssertionError(
                    f"no progress: {ai}/{len(a_beats)} a beats, {bi}/{len(b_beats)} b beats, "
                    f"{len(out_words)}/{expect_rows} rows after {cycle} cycles"
                )
            if not a_on and ai < len(a_beats) and not (pause and next(pause)):
                dut.a__payload.value = a_beats[ai]
                a_on = True
            if not b_on and bi < len(b_beats) and not (pause and next(pause)):
                dut.b__payload.value = b_beats[bi]
                b_on = True
            dut.a__valid.value = int(a_on)
            dut.b__valid.value = int(b_on)
            await ReadOnly()
            a_fire = a_on and bool(dut.a__ready.value)
            b_fire = b_on and bool(dut.b__ready.value)
            if dut.o__valid.value:
                out_cycles.append(cycle)
                out_words.append(read_unsigned(dut.o__payload, f"output row in cycle {cycle}"))
            await RisingEdge(dut.clk)
            if a_fire:
                a_acc.append(cycle)
                ai += 1
                a_on = False
            if b_fire:
                b_acc.append(cycle)
                bi += 1
                b_on = False
            cycle += 1
        dut.a__valid.value = 0
        dut.b__valid.value = 0
        decoded = [self.codec.output(w) for w in out_words]
        rows = (
            np.stack([r for r, _ in decoded])
            if decoded
            else np.zeros((0, self.cfg.n), dtype=np.int64)
        )
        first = min(a_acc[:1] + b_acc[:1], default=0)
        return RunResult(
            a_accepts=a_acc,
            b_accepts=b_acc,
            out_cycles=out_cycles,
            out_rows=rows,
            out_last=[last for _, last in decoded],
            cycles=(out_cycles[-1] - first + 1) if out_cycles else 0,
        )

    async def run(
        self, ops: Sequence[Op], *, pause: Iterator[bool] | None = None
    ) -> tuple[RunResult, list[TileTiming]]:
        """Run a program, check every result against golden; return the run and the model."""
        a_beats, b_beats = self.beats(ops)
        result = await self.drive(a_beats, b_beats, expect_rows=self.output_rows(ops), pause=pause)
        self.check_results(ops, result)
        return result, schedule([op.tile for op in ops], self.cfg.n)

    # -- checking ------------------------------------------------------------------------

    def check_results(self, ops: Sequence[Op], result: RunResult) -> None:
        """Compare every output element with golden and check the ``last`` flags."""
        n = self.cfg.n
        row = 0
        for i, op in enumerate(ops):
            want = op.expected(self.cfg)
            if isinstance(op, WsOp):
                got_rows = result.out_rows[row : row + op.a.shape[0]]
                lasts = result.out_last[row : row + op.a.shape[0]]
                got = got_rows[:, : want.shape[1]]
                row += op.a.shape[0]
            else:
                got_rows = result.out_rows[row : row + n][::-1]  # OS drains bottom row first
                lasts = result.out_last[row : row + n]
                got = got_rows[: want.shape[0], : want.shape[1]]
                row += n
            if lasts != [False] * (len(lasts) - 1) + [True]:
                raise AssertionError(
                    f"op {i}: `last` flags {lasts} (only the final row may be set)"
                )
            if got.shape != want.shape or not np.array_equal(got, want):
                bad = np.argwhere(got != want) if got.shape == want.shape else []
                raise AssertionError(
                    f"op {i} ({type(op).__name__}, a {op.a.shape}): result differs from golden "
                    f"at {len(bad)} elements, first {bad[:5].tolist() if len(bad) else got.shape}"
                )
        if row != len(result.out_rows):
            raise AssertionError(f"{len(result.out_rows)} output rows, expected {row}")

    @staticmethod
    def check_timeline(result: RunResult, model: list[TileTiming]) -> None:
        """The RTL's accept and output cycles equal the timing model's, beat for beat."""
        first = min(result.a_accepts[:1] + result.b_accepts[:1])
        want_a = [c for t in model for c in t.a_accepts]
        want_b = [c for t in model for c in t.b_accepts]
        want_out = [c for t in model for c in t.outputs]
        got_a = [c - first for c in result.a_accepts]
        got_b = [c - first for c in result.b_accepts]
        got_out = [c - first for c in result.out_cycles]
        for name, got, want in (("a", got_a, want_a), ("b", got_b, want_b)):
            if got != want:
                raise AssertionError(f"{name} accept cycles {got[:12]}... != model {want[:12]}...")
        if got_out != sorted(want_out):
            raise AssertionError(f"output cycles {got_out[:12]}... != model {want_out[:12]}...")
