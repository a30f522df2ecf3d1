"""A DRAM that lives in the simulator: an AXI4 slave memory compiled with the design.

Why: a Python bus model (cocotbext-axi's ``AxiRam``) costs a coroutine step per beat on five
channels and caps the whole accelerator at a few thousand cycles per second; this model runs
at the speed of the generated RTL under Verilator and Icarus alike. cocotbext-axi stays the
protocol reference: the same programs run on both and must agree byte for byte.

Timing (:class:`~cdm_qta.hw.config.DramTiming`, the data the cycle model reads):

* **Reads**: an AR is accepted while fewer than ``max_outstanding`` read bursts wait. Its first
  R beat is presented ``read_latency`` cycles after the AR handshake at the earliest; then one
  beat per cycle, throttled to ``beat_num / beat_den`` beats per cycle, bursts in order.
* **Writes**: an AW is accepted while fewer than ``max_outstanding`` write bursts wait; W beats
  are accepted (same throttle) once their burst's AW is in; the B response is presented
  ``write_latency`` cycles after the burst's last W beat at the earliest.
* **Stalls** (run-time inputs, no rebuild): with probability ``stall_prob / 256`` per cycle and
  channel, ``arready``/``awready``/``wready`` drop and no new R or B beat is presented (a
  presented beat stays valid until taken, as AXI requires), from a seeded xorshift generator.
* **Errors** (run-time): bursts that touch either error range ``[errN_lo, errN_hi)`` answer
  ``errN_resp`` (SLVERR or DECERR) on every beat, read data zero, nothing written; bursts
  beyond the memory's size answer DECERR.

Back door (no per-beat Python): a pulse on ``bd_load`` runs ``$readmemh("dram_load.hex")`` on
the storage (the file names words with ``@address`` lines), a pulse on ``bd_dump`` runs
``$writememh("dram_dump.hex", mem, bd_lo, bd_hi)``; both files live in the simulator's working
directory. :class:`~cdm_qta.tb.accel_tb.AccelTB` writes and reads them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In

from cdm_qta.hw.axi import AxiResp, axi4_signature
from cdm_qta.hw.checks import check_pow2
from cdm_qta.hw.config import AXI4_MAX_BUS_BYTES, DramTiming

__all__ = ["DUMP_FILE", "LOAD_FILE", "SimDram", "storage_verilog"]

#: Entries of the R output queue (see the read side of :class:`SimDram`).
R_QUEUE = 3
LOAD_FILE = "dram_load.hex"
DUMP_FILE = "dram_dump.hex"


def storage_name(words: int, data_bytes: int) -> str:
    return f"cdm_qta_dram_storage_w{data_bytes}_n{words}"


def storage_verilog(words: int, data_bytes: int) -> str:
    """The storage array with its back door: Verilog, because Amaranth has no ``$readmemh``.

    Memory starts zeroed (as the golden model's DRAM does); writes honour byte strobes.
    """
    bits = 8 * data_bytes
    abits = max(words - 1, 1).bit_length()
    return f"""
module {storage_name(words, data_bytes)} (
  input clk,
  input rd_en, input [{abits - 1}:0] rd_addr, output reg [{bits - 1}:0] rd_data,
  input wr_en, input [{abits - 1}:0] wr_addr, input [{bits - 1}:0] wr_data,
  input [{data_bytes - 1}:0] wr_strb,
  input bd_load, input bd_dump, input [{abits - 1}:0] bd_lo, input [{abits - 1}:0] bd_hi
);
  reg [{bits - 1}:0] mem [0:{words - 1}];
  integer i;
  initial begin
    for (i = 0; i < {words}; i = i + 1) mem[i] = {bits}'d0;
    rd_data = {bits}'d0;
  end
  always @(posedge clk) begin
    if (rd_en) rd_data <= mem[rd_addr];
    if (wr_en)
      for (i = 0; i < {data_bytes}; i = i + 1)
        if (wr_strb[i]) mem[wr_addr][i * 8 +: 8] <= wr_data[i * 8 +: 8];
    if (bd_load) $readmemh("{LOAD_FILE}", mem);
    if (bd_dump) $writememh("{DUMP_FILE}", mem, bd_lo, bd_hi);
  end
endmodule
"""


def _xorshift(x: object) -> object:
    """One step of Marsaglia's xorshift64 (combinational)."""
    a = x ^ (x << 13)[:64]
    b = a ^ (a >> 7)
    return b ^ (b << 17)[:64]


class SimDram(wiring.Component):
    """AXI4 slave memory of ``size_bytes`` bytes with the timing of ``timing``.

    Parameters
    ----------
    data_bytes : int
        Bus width W (a power of two, 4 to 256); every burst must use the full width.
    size_bytes : int
        Memory size, a power of two; addresses are taken modulo ``2**32`` and bursts beyond the
        size answer DECERR.
    timing : DramTiming
    id_bits : int

    Members
    -------
    axi : In(axi4_signature)        the slave port
    stall_prob, stall_seed, reseed : In   random stalls (see the module docstring)
    err0_lo, err0_hi, err0_resp, err1_lo, err1_hi, err1_resp : In   error ranges
    bd_load, bd_dump, bd_lo, bd_hi : In   the back door (word addresses)
    """

    def __init__(
        self, *, data_bytes: int, size_bytes: int, timing: DramTiming, id_bits: int = 1
    ) -> None:
        self._w = check_pow2("data_bytes", data_bytes, 4, AXI4_MAX_BUS_BYTES)
        self._size = check_pow2("size_bytes", size_bytes, 4096, 1 << 31)
        self._timing = timing
        self._words = self._size // self._w
        abits = max(self._words - 1, 1).bit_length()
        super().__init__(
            {
                "axi": In(axi4_signature(data_bytes=self._w, id_bits=id_bits)),
                "stall_prob": In(8),
                "stall_seed": In(32),
                "reseed": In(1),
                "err0_lo": In(32),
                "err0_hi": In(32),
                "err0_resp": In(2),
                "err1_lo": In(32),
                "err1_hi": In(32),
                "err1_resp": In(2),
                "bd_load": In(1),
                "bd_dump": In(1),
                "bd_lo": In(abits),
                "bd_hi": In(abits),
            }
        )

    @property
    def words(self) -> int:
        return self._words

    def elaborate(self, platform: object) -> Module:
        m = Module()
        t = self._timing
        w, lw = self._w, self._w.bit_length() - 1
        bus = self.axi
        id_bits = len(bus.arid)
        abits = len(self.bd_lo)

        # ---- time, random stalls, bandwidth ----
        now = Signal(32)
        m.d.sync += now.eq(now + 1)
        rand = Signal(64, init=0x9E3779B97F4A7C15)
        with m.If(self.reseed):
            m.d.sync += rand.eq(Cat(self.stall_seed, ~self.stall_seed) | 1)
        with m.Else():
            m.d.sync += rand.eq(_xorshift(rand))
        stall = {
            ch: rand[8 * i : 8 * i + 8] < self.stall_prob
            for i, ch in enumerate(("ar", "r", "aw", "w", "b"))
        }

        def throttle(name: str) -> tuple[Signal, Signal]:
            """(a beat may move now, strobe: it moved) for beat_num/beat_den per cycle."""
            if t.beat_num == t.beat_den:
                return Const(1), Signal(name=f"{name}_beat")
            credit = Signal(range(2 * t.beat_den + 1), name=f"{name}_credit", init=t.beat_den)
            moved = Signal(name=f"{name}_beat")
            gained = Mux(credit + t.beat_num > t.beat_den, t.beat_den, credit + t.beat_num)
            m.d.sync += credit.eq(Mux(moved, gained - t.beat_den, gained))
            return credit >= t.beat_den, moved

        def error_of(addr: object, length: object) -> object:
            """The response of a burst ``[addr, addr + (length + 1) * W)``."""
            end = Signal(34, name="burst_end")
            m.d.comb += end.eq(addr + ((length + 1) << lw))
            resp = Signal(2, name="burst_resp")
            hit0 = (addr < self.err0_hi) & (end > self.err0_lo)
            hit1 = (addr < self.err1_hi) & (end > self.err1_lo)
            with m.If(end > self._size):
                m.d.comb += resp.eq(AxiResp.DECERR)
            with m.Elif(hit0):
                m.d.comb += resp.eq(self.err0_resp)
            with m.Elif(hit1):
                m.d.comb += resp.eq(self.err1_resp)
            return resp

        # ---- storage ----
        rd_en = Signal()
        rd_addr = Signal(abits)
        rd_data = Signal(8 * w)
        wr_en = Signal()
        wr_addr = Signal(abits)
        m.submodules.storage = Instance(
            storage_name(self._words, w),
            i_clk=ClockSignal(),
            i_rd_en=rd_en,
            i_rd_addr=rd_addr,
            o_rd_data=rd_data,
            i_wr_en=wr_en,
            i_wr_addr=wr_addr,
            i_wr_data=bus.wdata,
            i_wr_strb=bus.wstrb,
            i_bd_load=self.bd_load,
            i_bd_dump=self.bd_dump,
            i_bd_lo=self.bd_lo,
            i_bd_hi=self.bd_hi,
        )

        # ---- reads: AR queue -> beats -> an R queue of R_QUEUE entries ----
        # A read is issued only while the queue has room for it and the one in flight; with
        # R_QUEUE = 3 that still leaves a beat every cycle when the master takes one every cycle
        # (two entries would: the level a read frees shows only in the next cycle).
        ar_layout = data.StructLayout({"addr": 32, "len": 8, "id": id_bits, "resp": 2, "t": 32})
        m.submodules.ar_q = ar_q = fifo.SyncFIFO(width=ar_layout.size, depth=t.max_outstanding)
        ar_in = Signal(ar_layout)
        m.d.comb += [
            ar_in.addr.eq(bus.araddr),
            ar_in.len.eq(bus.arlen),
            ar_in.id.eq(bus.arid),
            ar_in.resp.eq(error_of(bus.araddr, bus.arlen)),
            ar_in.t.eq(now),
            ar_q.w_data.eq(ar_in),
            bus.arready.eq(ar_q.w_rdy & ~stall["ar"]),
            ar_q.w_en.eq(bus.arvalid & bus.arready),
        ]
        r_layout = data.StructLayout({"data": 8 * w, "resp": 2, "last": 1, "id": id_bits})
        m.submodules.r_q = r_q = fifo.SyncFIFO(width=r_layout.size, depth=R_QUEUE)
        head = data.View(ar_layout, ar_q.r_data)
        beat = Signal(8)
        in_flight = Signal()
        flight = Signal(r_layout)  # what the read issued last cycle becomes
        r_ok, r_moved = throttle("r")
        due = (now - head.t)[:32] >= t.read_latency  # modulo 2**32: wrap-safe
        issue = Signal()
        m.d.comb += [
            issue.eq(ar_q.r_rdy & due & r_ok & ~stall["r"] & (r_q.level + in_flight < R_QUEUE)),
            r_moved.eq(issue),
            rd_en.eq(issue),
            rd_addr.eq((head.addr >> lw) + beat),
            ar_q.r_en.eq(issue & (beat == head.len)),
        ]
        with m.If(issue):
            m.d.sync += beat.eq(Mux(beat == head.len, 0, beat + 1))
        m.d.sync += [
            in_flight.eq(issue),
            flight.resp.eq(head.resp),
            flight.last.eq(beat == head.len),
            flight.id.eq(head.id),
        ]
        r_in = Signal(r_layout)
        m.d.comb += [
            r_in.data.eq(Mux(flight.resp == AxiResp.OKAY, rd_data, 0)),
            r_in.resp.eq(flight.resp),
            r_in.last.eq(flight.last),
            r_in.id.eq(flight.id),
            r_q.w_data.eq(r_in),
            r_q.w_en.eq(in_flight),
        ]
        r_out = data.View(r_layout, r_q.r_data)
        m.d.comb += [
            bus.rvalid.eq(r_q.r_rdy),
            bus.rdata.eq(r_out.data),
            bus.rresp.eq(r_out.resp),
            bus.rlast.eq(r_out.last),
            bus.rid.eq(r_out.id),
            r_q.r_en.eq(bus.rready),
        ]

        # ---- writes: AW queue, W beats into storage, B queue with its latency ----
        aw_layout = data.StructLayout({"addr": 32, "len": 8, "id": id_bits, "resp": 2})
        m.submodules.aw_q = aw_q = fifo.SyncFIFO(width=aw_layout.size, depth=t.max_outstanding)
        aw_in = Signal(aw_layout)
        m.d.comb += [
            aw_in.addr.eq(bus.awaddr),
            aw_in.len.eq(bus.awlen),
            aw_in.id.eq(bus.awid),
            aw_in.resp.eq(error_of(bus.awaddr, bus.awlen)),
            aw_q.w_data.eq(aw_in),
            bus.awready.eq(aw_q.w_rdy & ~stall["aw"]),
            aw_q.w_en.eq(bus.awvalid & bus.awready),
        ]
        b_layout = data.StructLayout({"id": id_bits, "resp": 2, "t": 32})
        m.submodules.b_q = b_q = fifo.SyncFIFO(width=b_layout.size, depth=t.max_outstanding)
        whead = data.View(aw_layout, aw_q.r_data)
        wbeat = Signal(8)
        w_ok, w_moved = throttle("w")
        w_fire = Signal()
        burst_end = wbeat == whead.len
        m.d.comb += [
            bus.wready.eq(aw_q.r_rdy & w_ok & ~stall["w"] & (~burst_end | b_q.w_rdy)),
            w_fire.eq(bus.wvalid & bus.wready),
            w_moved.eq(w_fire),
            wr_en.eq(w_fire & (whead.resp == AxiResp.OKAY)),
            wr_addr.eq((whead.addr >> lw) + wbeat),
            aw_q.r_en.eq(w_fire & burst_end),
        ]
        with m.If(w_fire):
            m.d.sync += wbeat.eq(Mux(burst_end, 0, wbeat + 1))
        b_in = Signal(b_layout)
        m.d.comb += [
            b_in.id.eq(whead.id),
            b_in.resp.eq(whead.resp),
            b_in.t.eq(now),
            b_q.w_data.eq(b_in),
            b_q.w_en.eq(w_fire & burst_end),
        ]
        bhead = data.View(b_layout, b_q.r_data)
        b_valid = Signal()
        b_id = Signal(id_bits)
        b_resp = Signal(2)
        b_due = (now - bhead.t)[:32] >= t.write_latency
        take_b = b_q.r_rdy & b_due & ~stall["b"] & (~b_valid | bus.bready)
        m.d.comb += [
            bus.bvalid.eq(b_valid),
            bus.bid.eq(b_id),
            bus.bresp.eq(b_resp),
            b_q.r_en.eq(take_b),
        ]
        with m.If(take_b):
            m.d.sync += [b_valid.eq(1), b_id.eq(bhead.id), b_resp.eq(bhead.resp)]
        with m.Elif(bus.bready):
            m.d.sync += b_valid.eq(0)
        return m
