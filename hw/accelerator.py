"""The whole accelerator: register port, instruction fetch and queue, engines, SRAMs, DMA, AXI.

::

    host -AXI4-Lite-> registers -+-> insn queue -> dispatch -+-> LOAD queue    -> LoadEngine
                                 |   ^                      +-> COMPUTE queue -> ComputeEngine
            FetchUnit (program) -+---+                      +-> STORE queue   -> StoreEngine
    FetchUnit -\\
    DmaReader --AxiReadArbiter (IDs 1, 0) -\\
                                            AxiJoin -AXI4-> DRAM
    DmaWriter -----------------------------/
    LoadEngine -> input/weight SRAM -> ComputeEngine (array) <-> output SRAM -> StoreEngine

The three engines run concurrently, each in program order, synchronised only by dependency
tokens (one counter per queue of :data:`cdm_qta.hw.isa.TOKEN_QUEUES`), as in VTA. Programs
arrive either word by word through the INSN registers or, fetched by the accelerator itself,
from DRAM (:mod:`cdm_qta.hw.fetch`); a fetched program ends with STATUS.done and the ``done``
output. The register map is :mod:`cdm_qta.hw.regs`; the instructions are :mod:`cdm_qta.hw.isa`.

Deadlock recovery: once no engine of a fetched program can move (each is idle or waits for a
token), the dispatcher cannot hand out its next instruction, and the fetch has fetched
everything or waits for room in the full queue, no token can ever be pushed again. After
:data:`DEADLOCK_CYCLES` such cycles the accelerator sets the ``deadlock`` error and flushes:
every instruction not yet started is dropped unexecuted (no tokens, not retired), the token
counters are cleared, and ``done`` rises, so a wrong program fails in a few cycles instead of
hanging its host.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, signed
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AxiJoin, AxiReadArbiter, axi4_lite_signature, axi4_signature
from .axil import AxiLiteRegisterPort
from .compute import ComputeEngine
from .config import AcceleratorConfig
from .dma import DmaReader, DmaWriter
from .fetch import FetchUnit
from .isa import (
    ENGINE_OF,
    INSN_BITS,
    TOKEN_FLAGS,
    TOKEN_MAX,
    TOKEN_QUEUES,
    Engine,
    Opcode,
    legal_flags,
)
from .isa_layout import header_layout
from .regs import CONTROL_BITS, COUNTER_BASE, COUNTERS, ERRORS, MAGIC, STATUS_BITS, Reg
from .transfer import LoadEngine, StoreEngine

__all__ = [
    "DEADLOCK_CYCLES",
    "DMA_READ_ID",
    "FETCH_ID",
    "REG_ADDR_BITS",
    "RETIRE_BITS",
    "Accelerator",
]

#: Byte address bits of the AXI4-Lite register port.
REG_ADDR_BITS = 8
#: Consecutive cycles of "nothing can move" before a fetched program counts as deadlocked
#: (covers the one-cycle delay of a token counter behind the push that feeds it).
DEADLOCK_CYCLES = 4
#: AXI read IDs: the instruction fetch and the LOAD engine's DMA share the read channel.
FETCH_ID = 1
DMA_READ_ID = 0
#: Width of the ``retire`` trace port: one strobe per engine, then the dispatcher's.
RETIRE_BITS = len(Engine) + 1


class Accelerator(wiring.Component):
    """CDM-QTA accelerator top level.

    Parameters
    ----------
    cfg : AcceleratorConfig

    Members
    -------
    s_axil : In(AXI4-Lite)   host control port (registers in :mod:`cdm_qta.hw.regs`)
    m_axi : Out(AXI4)        DRAM port of the DMA and the instruction fetch
    busy : Out               an instruction is queued or running (also STATUS[0])
    done : Out               a fetched program has finished (STATUS.done; an interrupt line)
    retire : Out(4)          strobes: an instruction retired in LOAD, COMPUTE, STORE (bits 0-2,
                             :class:`~cdm_qta.hw.isa.Engine` order) or the dispatcher (bit 3:
                             FENCE, dropped words); a trace port, so a cycle model can be held
                             to the cycle each instruction finished, not only to totals
    """

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self._cfg = cfg
        super().__init__(
            {
                "s_axil": In(axi4_lite_signature(addr_bits=REG_ADDR_BITS)),
                "m_axi": Out(axi4_signature(data_bytes=cfg.dram_bus_bytes)),
                "busy": Out(1),
                "done": Out(1),
                "retire": Out(RETIRE_BITS),
            }
        )

    @property
    def cfg(self) -> AcceleratorConfig:
        return self._cfg

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self._cfg
        n = cfg.n

        # ---- SRAMs: 1R1W input/weight buffers, 2R1W output buffer ----
        operand_row = data.ArrayLayout(signed(cfg.array.operand_bits), n)
        acc_row = data.ArrayLayout(signed(cfg.array.acc_bits), n)
        m.submodules.input_buffer = in_mem = Memory(
            shape=operand_row, depth=cfg.input_rows, init=[]
        )
        m.submodules.weight_buffer = w_mem = Memory(
            shape=operand_row, depth=cfg.weight_rows, init=[]
        )
        m.submodules.output_buffer = out_mem = Memory(shape=acc_row, depth=cfg.output_rows, init=[])
        # Read ports: synchronous, one cycle latency. The compute writer's port is transparent
        # to the write port so read-modify-write accumulation sees a same-cycle write.
        in_wr = in_mem.write_port()
        in_rd = in_mem.read_port()
        w_wr = w_mem.write_port()
        w_rd = w_mem.read_port()
        out_wr = out_mem.write_port(granularity=1)
        out_rd_acc = out_mem.read_port(transparent_for=(out_wr,))
        out_rd_store = out_mem.read_port()

        # ---- engines, DMA, fetch and the AXI port they share ----
        m.submodules.load = load = LoadEngine(cfg)
        m.submodules.compute = comp = ComputeEngine(cfg)
        m.submodules.store = store = StoreEngine(cfg)
        by_engine = {Engine.LOAD: load, Engine.COMPUTE: comp, Engine.STORE: store}
        window = {"dram_base": cfg.dram_base, "dram_size": cfg.dram_size}
        bus = {"data_bytes": cfg.dram_bus_bytes}
        dma = {"max_outstanding": cfg.dma_outstanding, **bus, **window}
        m.submodules.dma_read = rd = DmaReader(row_width=cfg.input_row_bytes, **dma)
        m.submodules.dma_write = wr = DmaWriter(row_width=cfg.output_row_bytes, **dma)
        m.submodules.fetch = fetch = FetchUnit(**bus, **window)
        m.submodules.read_arbiter = arb = AxiReadArbiter(ids=(FETCH_ID, DMA_READ_ID), **bus)
        m.submodules.axi_join = join = AxiJoin(**bus)
        wiring.connect(m, fetch.axi, arb.m0)
        wiring.connect(m, rd.axi, arb.m1)
        wiring.connect(m, arb.bus, join.read)
        wiring.connect(m, wr.axi, join.write)
        wiring.connect(m, join.bus, wiring.flipped(self.m_axi))

        wiring.connect(m, load.dma_cmd, rd.cmd)
        wiring.connect(m, rd.row, load.dma_row)
        wiring.connect(m, rd.done, load.dma_done)
        wiring.connect(m, store.dma_cmd, wr.cmd)
        wiring.connect(m, store.dma_row, wr.row)
        wiring.connect(m, wr.done, store.dma_done)

        m.d.comb += [
            in_wr.addr.eq(load.in_wr_addr),
            in_wr.en.eq(load.in_wr_en),
            in_wr.data.eq(load.wr_data),
            w_wr.addr.eq(load.w_wr_addr),
            w_wr.en.eq(load.w_wr_en),
            w_wr.data.eq(load.wr_data),
            in_rd.addr.eq(comp.in_rd_addr),
            in_rd.en.eq(comp.in_rd_en),
            comp.in_rd_data.eq(in_rd.data),
            w_rd.addr.eq(comp.w_rd_addr),
            w_rd.en.eq(comp.w_rd_en),
            comp.w_rd_data.eq(w_rd.data),
            out_rd_acc.addr.eq(comp.out_rd_addr),
            out_rd_acc.en.eq(comp.out_rd_en),
            comp.out_rd_data.eq(out_rd_acc.data),
            out_wr.addr.eq(comp.out_wr_addr),
            out_wr.en.eq(comp.out_wr_en),
            out_wr.data.eq(comp.out_wr_data),
            out_rd_store.addr.eq(store.out_rd_addr),
            out_rd_store.en.eq(store.out_rd_en),
            store.out_rd_data.eq(out_rd_store.data),
        ]

        flushing = Signal()  # a deadlocked program is being dropped
        clear_tokens = Signal()

        # ---- dependency tokens: one counter per queue of the ISA ----
        overflows = []
        for q in TOKEN_QUEUES:
            producer, consumer = by_engine[q.producer], by_engine[q.consumer]
            push = getattr(producer, q.push_flag)
            pop = getattr(consumer, q.pop_flag)
            count = Signal(range(TOKEN_MAX + 1), name=f"tokens_{q.name}")
            overflow = Signal(name=f"tokens_{q.name}_overflow")
            full = count == TOKEN_MAX
            m.d.comb += [
                overflow.eq(push & ~pop & full),
                # has_prev / has_next: the side the consumer pops this queue from
                getattr(consumer, "has_" + q.pop_flag.removeprefix("pop_")).eq(count != 0),
            ]
            with m.If(clear_tokens):
                m.d.sync += count.eq(0)
            with m.Elif(push & ~pop & ~full):
                m.d.sync += count.eq(count + 1)
            with m.Elif(pop & ~push):
                m.d.sync += count.eq(count - 1)
            overflows.append(overflow)

        # ---- instruction queue (host words or fetched words) and dispatch ----
        m.submodules.insn_queue = iq = fifo.SyncFIFOBuffered(
            width=INSN_BITS, depth=cfg.insn_queue_depth
        )
        engines = {op: by_engine[e] for op, e in ENGINE_OF.items()}
        queues = {}
        for op, engine in engines.items():
            # One bit beside the word: "skip" (illegal flags: executed as a no-op that still
            # takes and gives its legal tokens, as the ISA says).
            q = fifo.SyncFIFO(width=INSN_BITS + 1, depth=cfg.engine_queue_depth)
            m.submodules[f"{op.name.lower()}_queue"] = q
            queues[op] = q
            m.d.comb += [
                engine.insn.valid.eq(q.r_rdy),
                engine.insn.payload.eq(q.r_data[:INSN_BITS]),
                engine.skip.eq(q.r_data[INSN_BITS]),
                q.r_en.eq(engine.insn.ready),
                engine.flush.eq(flushing),
            ]
        head = data.View(header_layout(), iq.r_data)
        queues_empty = ~Cat(q.r_rdy for q in queues.values()).any()
        engines_idle = ~(load.busy | comp.busy | store.busy) & queues_empty
        # Flags the ISA does not give an opcode (LOAD has no previous engine, STORE no next one,
        # FENCE none) are errors: they are dropped, so they never take or make a token, and the
        # instruction is skipped (its legal tokens still flow, so nothing waits forever).
        bad_flags = Signal()
        fixed = Signal(INSN_BITS)
        fixed_view = data.View(header_layout(), fixed)
        m.d.comb += fixed.eq(iq.r_data)
        for op in Opcode:
            illegal_here = [f for f in TOKEN_FLAGS if f not in legal_flags(op)]
            if not illegal_here:
                continue
            with m.If(head.opcode == op):
                m.d.comb += bad_flags.eq(Cat(getattr(head, f) for f in illegal_here).any())
                m.d.comb += [getattr(fixed_view, f).eq(0) for f in illegal_here]

        dispatch_retire = Signal()
        illegal = Signal()
        dispatch_stuck = Signal()  # the queue's head cannot move on
        with m.If(flushing):
            m.d.comb += iq.r_en.eq(1)  # drop everything still queued, unexecuted
        with m.Elif(iq.r_rdy):
            with m.Switch(head.opcode):
                for op, q in queues.items():
                    with m.Case(op):
                        m.d.comb += [
                            q.w_data.eq(Cat(fixed, bad_flags)),
                            q.w_en.eq(1),
                            iq.r_en.eq(q.w_rdy),
                            illegal.eq(q.w_rdy & bad_flags),
                            dispatch_stuck.eq(~q.w_rdy),
                        ]
                with m.Case(Opcode.FENCE):
                    m.d.comb += [
                        iq.r_en.eq(engines_idle),
                        dispatch_retire.eq(engines_idle),
                        illegal.eq(engines_idle & bad_flags),
                        dispatch_stuck.eq(~engines_idle),
                    ]
                with m.Default():
                    m.d.comb += [iq.r_en.eq(1), dispatch_retire.eq(1), illegal.eq(1)]
        with m.Else():
            m.d.comb += dispatch_stuck.eq(iq.level == 0)

        # ---- host registers ----
        m.submodules.regs = port = AxiLiteRegisterPort(addr_bits=REG_ADDR_BITS)
        wiring.connect(m, wiring.flipped(self.s_axil), port.axil)
        insn_words = [Signal(32, name=f"insn_word{i}") for i in range(3)]
        fetch_addr = Signal(32)
        fetch_count = Signal(32)
        control = Signal(len(CONTROL_BITS))
        host_push = Signal()
        byte_addr = Signal(REG_ADDR_BITS)
        m.d.comb += byte_addr.eq(port.reg_addr << 2)
        with m.If(port.reg_we):
            with m.Switch(byte_addr):
                for i in range(3):
                    with m.Case(Reg.INSN0 + 4 * i):
                        m.d.sync += insn_words[i].eq(port.reg_wdata)
                with m.Case(Reg.INSN3):
                    m.d.comb += host_push.eq(1)
                with m.Case(Reg.FETCH_ADDR):
                    m.d.sync += fetch_addr.eq(port.reg_wdata)
                with m.Case(Reg.FETCH_COUNT):
                    m.d.sync += fetch_count.eq(port.reg_wdata)
                with m.Case(Reg.CONTROL):
                    m.d.comb += control.eq(port.reg_wdata)
        ctl = {name: control[bit] for name, bit in CONTROL_BITS.items()}

        # The queue takes fetched words, else a host word; a host word during a fetch is lost.
        overflow = Signal()
        m.d.comb += [
            fetch.start.eq(ctl["start"]),
            fetch.addr.eq(fetch_addr),
            fetch.count.eq(fetch_count),
            fetch.words.ready.eq(iq.w_rdy),
        ]
        with m.If(fetch.active):
            m.d.comb += [
                iq.w_data.eq(fetch.words.payload),
                iq.w_en.eq(fetch.words.valid),
                overflow.eq(host_push),
            ]
        with m.Else():
            m.d.comb += [
                iq.w_data.eq(Cat(*insn_words, port.reg_wdata)),
                iq.w_en.eq(host_push),
                overflow.eq(host_push & ~iq.w_rdy),
            ]

        # ---- programs: completion and deadlock ----
        busy = Signal()
        m.d.comb += [busy.eq((iq.level != 0) | ~engines_idle), self.busy.eq(busy)]
        running = Signal()  # a started program has not completed
        fetched = Signal()  # ... and all its words are in (or it was refused)
        done = Signal()
        stuck = Signal(range(DEADLOCK_CYCLES + 1))
        deadlock = Signal()
        waiting = load.wait_token | comp.wait_token | store.wait_token
        quiet = [e.quiet & (~e.insn.valid | e.wait_token) for e in by_engine.values()]
        # The fetch moves on unless it has a word the full queue cannot take (words it still
        # waits for from DRAM may hold the very push that unblocks everything).
        fetch_stuck = ~fetch.active | (fetch.words.valid & ~iq.w_rdy)
        nothing_moves = running & fetch_stuck & Cat(quiet).all() & dispatch_stuck & waiting
        with m.If(nothing_moves & ~flushing & (stuck != DEADLOCK_CYCLES)):
            m.d.sync += stuck.eq(stuck + 1)
        with m.Elif(~nothing_moves):
            m.d.sync += stuck.eq(0)
        m.d.comb += deadlock.eq((stuck == DEADLOCK_CYCLES) & ~flushing)
        with m.If(deadlock):
            m.d.sync += [flushing.eq(1), stuck.eq(0)]
        # The rest of the program is dropped too: the flush lasts until the fetch is through.
        with m.If(flushing & (iq.level == 0) & queues_empty & ~fetch.active):
            m.d.comb += clear_tokens.eq(1)
            m.d.sync += flushing.eq(0)

        with m.If(ctl["start"] & ~fetch.active):
            # An empty or refused program is finished in the cycle it starts.
            m.d.sync += [running.eq(1), fetched.eq(fetch.finished), done.eq(0)]
        with m.Else():
            with m.If(fetch.finished):
                m.d.sync += fetched.eq(1)
            # `busy` covers the queue from the cycle after a word went in, so a program is
            # complete only once `fetched` (registered after its last word) and idle agree.
            with m.If(running & fetched & ~busy & ~flushing):
                m.d.sync += [running.eq(0), done.eq(1)]
            with m.If(ctl["clear_done"]):
                m.d.sync += done.eq(0)
        m.d.comb += self.done.eq(done)

        # ---- status and counters ----
        errors = Signal(len(ERRORS))
        err = {name: Signal(name=f"err_{name}") for name in ERRORS}
        m.d.comb += [
            err["illegal_insn"].eq(illegal),
            err["queue_overflow"].eq(overflow),
            err["load_range"].eq(load.range_error),
            err["compute_range"].eq(comp.range_error),
            err["store_range"].eq(store.range_error),
            err["dma_align"].eq(load.dma_error.align | store.dma_error.align),
            err["dma_window"].eq(load.dma_error.window | store.dma_error.window),
            err["dma_read_bus"].eq(load.dma_error.bus),
            err["dma_write_bus"].eq(store.dma_error.bus),
            err["array"].eq(comp.array_error),
            err["token_overflow"].eq(Cat(overflows).any()),
            err["fetch_align"].eq(fetch.finished & fetch.error.align),
            err["fetch_window"].eq(fetch.finished & fetch.error.window),
            err["fetch_bus"].eq(fetch.finished & fetch.error.bus),
            err["fetch_busy"].eq(fetch.busy_start),
            err["deadlock"].eq(deadlock),
        ]
        increments = {
            "cycles": busy | running,  # a fetched program counts from its start to `done`
            "load_busy": load.busy,
            "load_wait_token": load.wait_token,
            "load_wait_bus": load.wait_bus,
            "compute_busy": comp.busy,
            "compute_wait_token": comp.wait_token,
            "compute_wait_array": comp.wait_array,
            "store_busy": store.busy,
            "store_wait_token": store.wait_token,
            "store_wait_bus": store.wait_bus,
            "macs": comp.macs,
            "insns_retired": load.retire + comp.retire + store.retire + dispatch_retire,
            "dma_read_bytes": load.bytes,
            "dma_write_bytes": wr.beat_bytes,  # bytes really written (a rejected STORE: none)
        }
        assert tuple(increments) == COUNTERS
        m.d.comb += self.retire.eq(Cat(*(by_engine[e].retire for e in Engine), dispatch_retire))
        counters = [Signal(64, name=f"count_{name}") for name in COUNTERS]

        new_errors = Cat(err[name] for name in ERRORS)
        with m.If(ctl["clear_errors"]):
            m.d.sync += errors.eq(new_errors)
        with m.Else():
            m.d.sync += errors.eq(errors | new_errors)
        for counter, name in zip(counters, COUNTERS, strict=True):
            with m.If(ctl["clear_counters"]):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + increments[name])

        flags = {"busy": busy, "queue_full": ~iq.w_rdy, "fetching": fetch.active, "done": done}
        status = Signal(32)
        for name, bit in STATUS_BITS.items():
            m.d.comb += status[bit].eq(flags[name])
        m.d.comb += status[16:].eq(errors)
        config_word = Cat(Const(n, 16), Const(cfg.dram_bus_bytes.bit_length() - 1, 4))
        rdata = Signal(32)
        with m.Switch(byte_addr):
            with m.Case(Reg.ID):
                m.d.comb += rdata.eq(MAGIC)
            with m.Case(Reg.CONFIG):
                m.d.comb += rdata.eq(config_word)
            with m.Case(Reg.STATUS):
                m.d.comb += rdata.eq(status)
            with m.Case(Reg.QUEUE_SPACE):
                m.d.comb += rdata.eq(cfg.insn_queue_depth - iq.level)
            with m.Case(Reg.FETCH_ADDR):
                m.d.comb += rdata.eq(fetch_addr)
            with m.Case(Reg.FETCH_COUNT):
                m.d.comb += rdata.eq(fetch_count)
            for i, counter in enumerate(counters):
                with m.Case(COUNTER_BASE + 8 * i):
                    m.d.comb += rdata.eq(counter[:32])
                with m.Case(COUNTER_BASE + 8 * i + 4):
                    m.d.comb += rdata.eq(counter[32:])
        with m.If(port.reg_re):
            m.d.sync += port.reg_rdata.eq(rdata)
        return m
