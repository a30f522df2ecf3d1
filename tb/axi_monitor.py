"""AXI4 and AXI4-Lite protocol monitors, compiled into the simulation beside the design.

Why in hardware: a protocol violation must be an immediate, named failure, not a suite that
hangs for 20 minutes (a DMA mutant whose bursts crossed 4 KB did exactly that). A monitor in
Python would cost a coroutine step every cycle; these watch every cycle at RTL speed and raise
``error`` with the first broken rule's :class:`Rule` code, which the testbench awaits with an
edge trigger.

Rules (AXI4 ARM IHI 0022, plus the design's own, marked *design*):

* every channel: ``VALID`` stays high until ``READY``; the payload is stable while it waits;
* AR/AW: INCR bursts only (*design*: the DMA issues nothing else), size at most the bus
  width, no burst crosses a 4 KB boundary, the address aligned to the size (*design*);
  ``AxCACHE``/``AxPROT`` the fixed values the design drives (*design*: ``CACHE_NORMAL``,
  ``PROT_DATA``; an interconnect would act on them, the simulated DRAM ignores them);
* W: strobes only on the byte lanes the beat's address covers; ``WLAST`` exactly on the
  burst's last beat; a burst's AW before its data (*design*: the DMA issues AW first);
* R: only for an outstanding AR of that ID, ``RLAST`` exactly on its last beat, in order per ID;
* B: only for a write burst of that ID whose data is complete;
* AXI4-Lite: valid/stable rules, and a response only for a request.
"""

from __future__ import annotations

import enum

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from cdm_qta.hw.axi import BURST_INCR, CACHE_NORMAL, axi4_lite_signature, axi4_signature
from cdm_qta.hw.dma import PROT_DATA

__all__ = ["AxiLiteMonitor", "AxiMonitor", "Rule", "watch"]

PAGE = 4096
#: Bursts of one ID the monitor can track at once (more is reported, not silently dropped).
TRACK = 32


class Rule(enum.IntEnum):
    """What a monitor found broken first (0: nothing)."""

    OK = 0
    AR_VALID_DROPPED = 1
    AR_UNSTABLE = 2
    AW_VALID_DROPPED = 3
    AW_UNSTABLE = 4
    W_VALID_DROPPED = 5
    W_UNSTABLE = 6
    R_VALID_DROPPED = 7
    R_UNSTABLE = 8
    B_VALID_DROPPED = 9
    B_UNSTABLE = 10
    BURST_TYPE = 11
    BURST_SIZE = 12
    CROSSES_4KB = 13
    UNALIGNED = 14
    WSTRB_LANES = 15
    WLAST = 16
    W_BEFORE_AW = 17
    R_UNEXPECTED = 18
    RLAST = 19
    B_UNEXPECTED = 20
    TOO_MANY_OUTSTANDING = 21
    CACHE_PROT = 22
    LITE_VALID_DROPPED = 32
    LITE_UNSTABLE = 33
    LITE_RESPONSE_UNEXPECTED = 34

    @property
    def description(self) -> str:
        return self.name.lower().replace("_", " ")


def _monitor_signature(sig: wiring.Signature) -> dict[str, wiring.Member]:
    """Every member of ``sig`` as an input: a monitor only looks."""
    return {name: In(member.shape) for name, member in sig.members.items()}


def watch(m: Module, monitor: wiring.Component, bus: object) -> None:
    """Connect ``monitor``'s inputs to every signal of ``bus`` (passively)."""
    for name in monitor.signature.members:
        if name in ("error", "code"):
            continue
        m.d.comb += getattr(monitor, name).eq(getattr(bus, name))


class _Checks:
    """Collects ``(condition, rule)`` pairs; the first that fires is latched."""

    def __init__(self, m: Module, error: Signal, code: Signal) -> None:
        self.m, self.error, self.code = m, error, code
        self.found: list[tuple[object, Rule]] = []

    def add(self, condition: object, rule: Rule) -> None:
        self.found.append((condition, rule))

    def channel(self, valid: object, ready: object, payload: list, drop: Rule, unstable: Rule):
        """VALID held until READY, payload stable meanwhile."""
        m = self.m
        waiting = Signal(name=f"wait_{drop.name.lower()}")
        held = Signal(len(Cat(*payload)), name=f"held_{drop.name.lower()}")
        m.d.sync += [waiting.eq(valid & ~ready), held.eq(Cat(*payload))]
        self.add(waiting & ~valid, drop)
        self.add(waiting & valid & (Cat(*payload) != held), unstable)

    def finish(self) -> None:
        m = self.m
        code = Signal(len(self.code), name="new_code")
        for condition, rule in reversed(self.found):  # the first listed wins
            with m.If(condition):
                m.d.comb += code.eq(rule)
        with m.If(~self.error & (code != 0)):
            m.d.sync += [self.error.eq(1), self.code.eq(code)]


class AxiMonitor(wiring.Component):
    """Watch an AXI4 port (every signal of :func:`~cdm_qta.hw.axi.axi4_signature`).

    Members
    -------
    araddr ... bready : In     the port's signals, by their AXI names
    error : Out(1)             sticky: a rule was broken
    code : Out(8)              the first broken :class:`Rule`
    """

    def __init__(self, *, data_bytes: int, id_bits: int = 1, addr_bits: int = 32) -> None:
        sig = axi4_signature(addr_bits=addr_bits, data_bytes=data_bytes, id_bits=id_bits)
        self._w = data_bytes
        super().__init__({**_monitor_signature(sig), "error": Out(1), "code": Out(8)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        checks = _Checks(m, self.error, self.code)
        lw = self._w.bit_length() - 1
        ids = 1 << len(self.arid)
        ar = ["araddr", "arlen", "arsize", "arburst", "arid", "arcache", "arprot"]
        aw = [n.replace("ar", "aw", 1) for n in ar]
        checks.channel(
            self.arvalid,
            self.arready,
            [getattr(self, n) for n in ar],
            Rule.AR_VALID_DROPPED,
            Rule.AR_UNSTABLE,
        )
        checks.channel(
            self.awvalid,
            self.awready,
            [getattr(self, n) for n in aw],
            Rule.AW_VALID_DROPPED,
            Rule.AW_UNSTABLE,
        )
        checks.channel(
            self.wvalid,
            self.wready,
            [self.wdata, self.wstrb, self.wlast],
            Rule.W_VALID_DROPPED,
            Rule.W_UNSTABLE,
        )
        checks.channel(
            self.rvalid,
            self.rready,
            [self.rdata, self.rresp, self.rlast, self.rid],
            Rule.R_VALID_DROPPED,
            Rule.R_UNSTABLE,
        )
        checks.channel(
            self.bvalid, self.bready, [self.bresp, self.bid], Rule.B_VALID_DROPPED, Rule.B_UNSTABLE
        )

        # ---- address channels: burst shape ----
        for prefix in ("ar", "aw"):
            valid = getattr(self, f"{prefix}valid")
            addr = getattr(self, f"{prefix}addr")
            size = getattr(self, f"{prefix}size")
            length = getattr(self, f"{prefix}len")
            burst = getattr(self, f"{prefix}burst")
            span = Signal(18, name=f"{prefix}_span")  # offset in the page + burst bytes
            m.d.comb += span.eq(addr[:12] + ((length + 1) << size))
            checks.add(valid & (burst != BURST_INCR), Rule.BURST_TYPE)
            checks.add(valid & (size > lw), Rule.BURST_SIZE)
            checks.add(valid & (span > PAGE), Rule.CROSSES_4KB)
            low = Signal(8, name=f"{prefix}_low")
            m.d.comb += low.eq(addr[:8] & ((1 << size) - 1))
            checks.add(valid & (low != 0), Rule.UNALIGNED)
            cache, prot = getattr(self, f"{prefix}cache"), getattr(self, f"{prefix}prot")
            checks.add(valid & ((cache != CACHE_NORMAL) | (prot != PROT_DATA)), Rule.CACHE_PROT)

        # ---- reads: per ID, the lengths of outstanding bursts, oldest first, and the beat of
        # the oldest one (AXI4 lets bursts of different IDs interleave; one ID stays in order)
        r_fire = self.rvalid & self.rready
        for i in range(ids):
            q = fifo.SyncFIFO(width=8, depth=TRACK)
            m.submodules[f"ar_track_{i}"] = q
            r_beat = Signal(8, name=f"r_beat_{i}")
            ar_fire = self.arvalid & self.arready & (self.arid == i)
            mine = r_fire & (self.rid == i)
            checks.add(ar_fire & ~q.w_rdy, Rule.TOO_MANY_OUTSTANDING)
            checks.add(mine & ~q.r_rdy, Rule.R_UNEXPECTED)
            is_last = r_beat == q.r_data
            checks.add(mine & q.r_rdy & (self.rlast != is_last), Rule.RLAST)
            m.d.comb += [
                q.w_data.eq(self.arlen),
                q.w_en.eq(ar_fire),
                q.r_en.eq(mine & is_last),
            ]
            with m.If(mine):
                m.d.sync += r_beat.eq(Mux(is_last, 0, r_beat + 1))

        # ---- writes: AW lengths and addresses; W beats counted against them ----
        aw_q = fifo.SyncFIFO(width=8 + 8 + 3 + len(self.awid), depth=TRACK)
        m.submodules.aw_track = aw_q
        aw_fire = self.awvalid & self.awready
        checks.add(aw_fire & ~aw_q.w_rdy, Rule.TOO_MANY_OUTSTANDING)
        m.d.comb += [
            aw_q.w_data.eq(Cat(self.awlen, self.awaddr[:8], self.awsize, self.awid)),
            aw_q.w_en.eq(aw_fire),
        ]
        w_len = aw_q.r_data[:8]
        w_addr = aw_q.r_data[8:16]
        w_size = aw_q.r_data[16:19]
        w_id = aw_q.r_data[19:]
        w_beat = Signal(8)
        w_fire = self.wvalid & self.wready
        w_last = w_beat == w_len
        checks.add(w_fire & ~aw_q.r_rdy, Rule.W_BEFORE_AW)
        checks.add(w_fire & aw_q.r_rdy & (self.wlast != w_last), Rule.WLAST)
        lane = Signal(8)
        m.d.comb += lane.eq((w_addr + (w_beat << w_size)) & (self._w - 1) & ~((1 << w_size) - 1))
        allowed = Signal(self._w)
        m.d.comb += allowed.eq((((1 << (1 << w_size)) - 1) << lane)[: self._w])
        checks.add(w_fire & aw_q.r_rdy & ((self.wstrb & ~allowed) != 0), Rule.WSTRB_LANES)
        m.d.comb += aw_q.r_en.eq(w_fire & w_last)
        with m.If(w_fire):
            m.d.sync += w_beat.eq(Mux(w_last, 0, w_beat + 1))
        # Per ID, write bursts whose data is complete and whose response is still due.
        b_fire = self.bvalid & self.bready
        for i in range(ids):
            due = Signal(range(TRACK + 1), name=f"b_due_{i}")
            done = w_fire & w_last & aw_q.r_rdy & (w_id == i)
            mine = b_fire & (self.bid == i)
            checks.add(mine & (due == 0) & ~done, Rule.B_UNEXPECTED)
            m.d.sync += due.eq(due + done - (mine & ((due != 0) | done)))
        checks.finish()
        return m


class AxiLiteMonitor(wiring.Component):
    """Watch an AXI4-Lite port: valid/ready and stability on every channel, no stray response.

    Members
    -------
    awaddr ... rready : In     the port's signals
    error : Out(1), code : Out(8)  as for :class:`AxiMonitor`
    """

    def __init__(self, *, addr_bits: int) -> None:
        sig = axi4_lite_signature(addr_bits=addr_bits)
        super().__init__({**_monitor_signature(sig), "error": Out(1), "code": Out(8)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        checks = _Checks(m, self.error, self.code)
        lite = (Rule.LITE_VALID_DROPPED, Rule.LITE_UNSTABLE)
        checks.channel(self.awvalid, self.awready, [self.awaddr], *lite)
        checks.channel(self.wvalid, self.wready, [self.wdata, self.wstrb], *lite)
        checks.channel(self.arvalid, self.arready, [self.araddr], *lite)
        checks.channel(self.bvalid, self.bready, [self.bresp], *lite)
        checks.channel(self.rvalid, self.rready, [self.rdata, self.rresp], *lite)
        # Requests answered: a write needs its AW and W, a read its AR.
        aw_n = Signal(8)
        w_n = Signal(8)
        ar_n = Signal(8)
        aw_f = self.awvalid & self.awready
        w_f = self.wvalid & self.wready
        ar_f = self.arvalid & self.arready
        b_f = self.bvalid & self.bready
        r_f = self.rvalid & self.rready
        checks.add(b_f & ((aw_n == 0) | (w_n == 0)), Rule.LITE_RESPONSE_UNEXPECTED)
        checks.add(r_f & (ar_n == 0), Rule.LITE_RESPONSE_UNEXPECTED)
        m.d.sync += [
            aw_n.eq(aw_n + aw_f - b_f),
            w_n.eq(w_n + w_f - b_f),
            ar_n.eq(ar_n + ar_f - r_f),
        ]
        checks.finish()
        return m
