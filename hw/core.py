"""The array with its edges: operand streams in, de-skewed output rows out.

This is the unit the controller (and today the testbench) drives. It owns every timing rule
of the array, so a producer only has to present beats in program order; the core accepts a
beat as soon as that is safe and never needs idle cycles inserted by its driver.

Protocol
--------
Two input streams, ``a`` (left edge) and ``b`` (top edge), carry beats of
:func:`~cdm_qta.hw.layouts.beat_layout`. An operation is a *tile*:

* **WS tile** (weights ``W[K x C]``, inputs ``A[M x K]``, ``K <= N``, ``C <= N``, any ``M``):
  ``b`` carries the K weight rows ``W[k, :]`` (``lanes = C``, ``last`` on row K-1), ``a`` carries
  the M input rows ``A[m, :]`` (``lanes = K``, ``last`` on row M-1). Output: M rows
  ``(A @ W)[m, :]`` in order, ``last`` on the final one. The two weight banks alternate, so the
  weights of tile j+1 load while tile j streams.
* **OS tile** (``A[M x K]``, ``B[K x C]``, ``M <= N``, ``C <= N``, any ``K``): for each k, one
  ``a`` beat with column ``A[:, k]`` (``lanes = M``) and one ``b`` beat with row ``B[k, :]``
  (``lanes = C``), accepted together; ``last`` on step K-1 of both. Output: N rows of the N x N
  result, **bottom row first** (row N-1, ..., row 0), ``last`` on row 0.

Each stream is consumed in order; tiles of both modes may follow each other freely.

Timing (all exact, modelled by :mod:`cdm_qta.hw.timing`)
---------------------------------------------------------
* A WS input row accepted in cycle ``t`` leaves as output in cycle ``t + 2N + 1``; the last
  step of an OS tile accepted in ``T`` drains its rows in cycles ``T + N + 2 .. T + 2N + 1``.
* WS weight row of bank X: accepted once every input row of the previous tile on X was.
  WS input row: accepted once its bank holds a complete tile.
* OS step: accepted at least N cycles after the last WS input row (the WS rows are skewed
  by up to N-1 cycles, OS steps are not). The last step of an OS tile: at least N cycles after
  the previous OS tile's last step (its N result rows share the bottom edge).

Errors (sticky until reset, :func:`~cdm_qta.hw.layouts.error_layout`): a WS weight tile longer
than N rows; an OS step whose ``a`` and ``b`` beats disagree on ``last``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .array import SystolicArray
from .config import ArrayConfig, Dataflow
from .layouts import FLAGS, TOKEN, beat_layout, error_layout, output_signature

__all__ = ["ArrayCore"]


class ArrayCore(wiring.Component):
    """PE array plus skew buffers, weight-bank bookkeeping, hazard checks and output de-skew.

    Parameters
    ----------
    cfg : ArrayConfig

    Members
    -------
    a : In(stream)
        Left-edge beats (WS input rows, OS columns of A).
    b : In(stream)
        Top-edge beats (WS weight rows, OS rows of B).
    o : Out
        De-skewed output rows (``valid``/``payload``, no ``ready``: the consumer takes one row
        per cycle whenever ``valid`` is high).
    busy : Out
        High while any accepted beat has not yet produced its output.
    error : Out
        Sticky error bits.
    """

    def __init__(self, cfg: ArrayConfig) -> None:
        self._cfg = cfg
        beat = beat_layout(cfg)
        super().__init__(
            {
                "a": In(stream.Signature(beat)),
                "b": In(stream.Signature(beat)),
                "o": Out(output_signature(cfg)),
                "busy": Out(1),
                "error": Out(error_layout()),
            }
        )

    @property
    def cfg(self) -> ArrayConfig:
        return self._cfg

    @property
    def latency(self) -> int:
        """Cycles from accepting a WS input row (or an OS tile's last step) to its last output."""
        return 2 * self._cfg.n + 1

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self._cfg
        n = cfg.n
        operand = signed(cfg.operand_bits)
        m.submodules.array = array = SystolicArray(cfg)

        a, b = self.a.payload, self.b.payload

        # ---- weight banks: loaded by `b`, consumed by `a`, alternating per WS tile ----
        full = Signal(2)
        wr_bank = Signal()
        rd_bank = Signal()
        wrow = Signal(range(n + 1))  # weight row index within the tile being loaded

        # ---- hazard counters, saturating at N ----
        since_ws = Signal(range(n + 1), init=n)  # cycles since the last WS input row
        since_os_last = Signal(range(n + 1), init=n)  # cycles since the last OS tile's last step
        os_first = Signal(init=1)  # the next OS step starts a new output tile
        quiet = Signal(range(self.latency + 2), init=self.latency + 1)  # cycles since any beat

        a_ws = self.a.valid & (a.mode == Dataflow.WS)
        b_ws = self.b.valid & (b.mode == Dataflow.WS)
        os_pair = self.a.valid & self.b.valid & (a.mode == Dataflow.OS) & (b.mode == Dataflow.OS)
        take_ws_a = Signal()
        take_ws_b = Signal()
        take_os = Signal()
        m.d.comb += [
            take_ws_a.eq(a_ws & full.bit_select(rd_bank, 1)),
            take_ws_b.eq(b_ws & ~full.bit_select(wr_bank, 1)),
            take_os.eq(os_pair & (since_ws == n) & (~a.last | (since_os_last == n))),
            self.a.ready.eq(take_ws_a | take_os),
            self.b.ready.eq(take_ws_b | take_os),
        ]

        with m.If(take_ws_a & a.last):
            m.d.sync += rd_bank.eq(~rd_bank)
        with m.If(take_ws_b & b.last):
            m.d.sync += [wr_bank.eq(~wr_bank), wrow.eq(0)]
        with m.Elif(take_ws_b & (wrow != n)):
            m.d.sync += wrow.eq(wrow + 1)
        # A tile's last input row frees its bank; a tile's last weight row fills the other one
        # (the two never name the same bank in one cycle: one is full, the other empty).
        for bank in range(2):
            with m.If(take_ws_a & a.last & (rd_bank == bank)):
                m.d.sync += full[bank].eq(0)
            with m.If(take_ws_b & b.last & (wr_bank == bank)):
                m.d.sync += full[bank].eq(1)

        with m.If(take_ws_a):
            m.d.sync += since_ws.eq(1)
        with m.Elif(since_ws != n):
            m.d.sync += since_ws.eq(since_ws + 1)
        with m.If(take_os & a.last):
            m.d.sync += since_os_last.eq(1)
        with m.Elif(since_os_last != n):
            m.d.sync += since_os_last.eq(since_os_last + 1)
        with m.If(take_os):
            m.d.sync += os_first.eq(a.last)
        with m.If(take_ws_a | take_ws_b | take_os):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != self.latency + 1):
            m.d.sync += quiet.eq(quiet + 1)

        with m.If(take_ws_b & (wrow == n)):
            m.d.sync += self.error.weight_rows.eq(1)
        with m.If(take_os & (a.last != b.last)):
            m.d.sync += self.error.os_last_mismatch.eq(1)

        # ---- left edge: mask lanes, skew WS rows (row r waits r cycles), OS rows unskewed ----
        def masked(beat: data.View, lane: int) -> object:
            return Mux(lane < beat.lanes, beat.data[lane], 0)

        lane_layout = data.StructLayout({"a": operand, "flags": FLAGS})
        # WS and OS inputs live in separate registers that are zero when idle, so the row
        # entrances can OR them: the hazard rules guarantee at most one is non-zero per row.
        ws_entry = Signal(data.ArrayLayout(lane_layout, n))
        os_entry = Signal(data.ArrayLayout(lane_layout, n))
        for r in range(n):
            m.d.sync += [
                ws_entry[r].a.eq(Mux(take_ws_a, masked(a, r), 0)),
                ws_entry[r].flags.ws.eq(take_ws_a),
                ws_entry[r].flags.sel.eq(take_ws_a & rd_bank),
                ws_entry[r].flags.last.eq(take_ws_a & a.last),
                os_entry[r].a.eq(Mux(take_os, masked(a, r), 0)),
                os_entry[r].flags.os.eq(take_os),
                os_entry[r].flags.sel.eq(take_os & os_first),
                os_entry[r].flags.last.eq(take_os & a.last),
            ]
        for r in range(n):
            skewed = ws_entry[r]
            for stage in range(r):
                delayed = Signal(lane_layout, name=f"skew_a_{r}_{stage}")
                m.d.sync += delayed.eq(skewed)
                skewed = delayed
            m.d.comb += [
                array.a_in[r].eq(skewed.a | os_entry[r].a),
                array.flags_in[r].eq(skewed.flags.as_value() | os_entry[r].flags.as_value()),
            ]

        # ---- top edge: mask lanes, skew column c by c cycles, then the column bus register ----
        top_entry = Signal(data.ArrayLayout(operand, n))
        tokens = Signal(data.ArrayLayout(TOKEN, n))
        for c in range(n):
            m.d.sync += top_entry[c].eq(Mux(take_ws_b | take_os, masked(b, c), 0))
        for r in range(n):
            m.d.sync += [
                tokens[r].en.eq(take_ws_b & (wrow == r)),
                tokens[r].bank.eq(wr_bank),
            ]
        m.d.comb += array.tok_in.eq(tokens)
        for c in range(n):
            skewed = top_entry[c]
            for stage in range(c):
                delayed = Signal(operand, name=f"skew_b_{c}_{stage}", reset_less=True)
                m.d.sync += delayed.eq(skewed)
                skewed = delayed
            bus = Signal(operand, name=f"bus_{c}", reset_less=True)
            m.d.sync += bus.eq(skewed)
            m.d.comb += array.bus[c].eq(bus)

        # ---- bottom edge: de-skew column c by N-1-c cycles; flags from the corner PE ----
        for c in range(n):
            skewed = array.d_out[c]
            for stage in range(n - 1 - c):
                delayed = Signal(signed(cfg.acc_bits), name=f"deskew_{c}_{stage}", reset_less=True)
                m.d.sync += delayed.eq(skewed)
                skewed = delayed
            m.d.comb += self.o.payload.data[c].eq(skewed)

        corner = array.corner_flags
        ws_out = Signal()
        ws_out_last = Signal()
        drain = Signal(range(n + 1))  # OS result rows still to leave the bottom edge
        m.d.sync += [ws_out.eq(corner.ws), ws_out_last.eq(corner.ws & corner.last)]
        with m.If(corner.os & corner.last):
            m.d.sync += drain.eq(n)
        with m.Elif(drain != 0):
            m.d.sync += drain.eq(drain - 1)
        m.d.comb += [
            self.o.valid.eq(ws_out | (drain != 0)),
            self.o.payload.last.eq(ws_out_last | (drain == 1)),
            self.busy.eq((quiet <= self.latency) | (drain != 0)),
        ]
        return m
