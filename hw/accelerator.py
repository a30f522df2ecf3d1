"""The whole accelerator: register port, instruction queue, engines, SRAMs, DMA, AXI.

::

    host -AXI4-Lite-> registers -> insn queue -> dispatch -+-> LOAD queue    -> LoadEngine
                                                           +-> COMPUTE queue -> ComputeEngine
                                                           +-> STORE queue   -> StoreEngine
    LoadEngine  -> DmaReader -\
                               AxiJoin -AXI4-> DRAM
    StoreEngine -> DmaWriter -/
    LoadEngine -> input/weight SRAM -> ComputeEngine (array) <-> output SRAM -> StoreEngine

The three engines run concurrently, each in program order, synchronised only by dependency
tokens (four counters: LOAD->COMPUTE, COMPUTE->LOAD, COMPUTE->STORE, STORE->COMPUTE), as in
VTA. The register map is :mod:`cdm_qta.hw.regs`; the instructions are :mod:`cdm_qta.hw.isa`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, signed
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AxiJoin, axi4_lite_signature, axi4_signature
from .axil import AxiLiteRegisterPort
from .compute import ComputeEngine
from .config import AcceleratorConfig
from .dma import DmaReader, DmaWriter
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
from .regs import COUNTER_BASE, COUNTERS, ERRORS, MAGIC, Reg
from .transfer import LoadEngine, StoreEngine

__all__ = ["Accelerator"]

REG_ADDR_BITS = 8


class Accelerator(wiring.Component):
    """CDM-QTA accelerator top level.

    Parameters
    ----------
    cfg : AcceleratorConfig

    Members
    -------
    s_axil : In(AXI4-Lite)   host control port (registers in :mod:`cdm_qta.hw.regs`)
    m_axi : Out(AXI4)        DRAM port of the DMA
    busy : Out               an instruction is queued or running (also STATUS[0])
    """

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self._cfg = cfg
        super().__init__(
            {
                "s_axil": In(axi4_lite_signature(addr_bits=REG_ADDR_BITS)),
                "m_axi": Out(axi4_signature(data_bytes=cfg.dram_bus_bytes)),
                "busy": Out(1),
            }
        )

    @property
    def cfg(self) -> AcceleratorConfig:
        return self._cfg

    def elaborate(self, platform: object) -> Module:
        m = Module()
        cfg = self._cfg
        n = cfg.n
        operand_row = data.ArrayLayout(signed(cfg.array.operand_bits), n)
        acc_row = data.ArrayLayout(signed(cfg.array.acc_bits), n)

        # ---- SRAMs: 1R1W input/weight buffers, 2R1W output buffer ----
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

        # ---- engines and DMA ----
        m.submodules.load = load = LoadEngine(cfg)
        m.submodules.compute = comp = ComputeEngine(cfg)
        m.submodules.store = store = StoreEngine(cfg)
        dma_args = {
            "data_bytes": cfg.dram_bus_bytes,
            "dram_base": cfg.dram_base,
            "dram_size": cfg.dram_size,
        }
        m.submodules.dma_read = rd = DmaReader(row_width=cfg.input_row_bytes, **dma_args)
        m.submodules.dma_write = wr = DmaWriter(row_width=cfg.output_row_bytes, **dma_args)
        m.submodules.axi_join = join = AxiJoin(data_bytes=cfg.dram_bus_bytes)
        wiring.connect(m, rd.axi, join.read)
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

        # ---- dependency tokens: one counter per queue of the ISA ----
        by_engine = {Engine.LOAD: load, Engine.COMPUTE: comp, Engine.STORE: store}
        engines = {op: by_engine[e] for op, e in ENGINE_OF.items()}
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
            with m.If(push & ~pop & ~full):
                m.d.sync += count.eq(count + 1)
            with m.Elif(pop & ~push):
                m.d.sync += count.eq(count - 1)
            overflows.append(overflow)

        # ---- instruction queue and dispatch ----
        m.submodules.insn_queue = iq = fifo.SyncFIFOBuffered(
            width=INSN_BITS, depth=cfg.insn_queue_depth
        )
        queues = {}
        for op, engine in engines.items():
            q = fifo.SyncFIFO(width=INSN_BITS, depth=4)
            m.submodules[f"{op.name.lower()}_queue"] = q
            queues[op] = q
            m.d.comb += [
                engine.insn.valid.eq(q.r_rdy),
                engine.insn.payload.eq(q.r_data),
                q.r_en.eq(engine.insn.ready),
            ]
        head = data.View(header_layout(), iq.r_data)
        engines_idle = (
            ~(load.busy | comp.busy | store.busy) & ~Cat(q.r_rdy for q in queues.values()).any()
        )
        # Flags the ISA does not give an opcode (LOAD has no previous engine, STORE no next one,
        # FENCE none) are errors and are dropped, so they never take or make a token.
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
        with m.If(iq.r_rdy):
            with m.Switch(head.opcode):
                for op, q in queues.items():
                    with m.Case(op):
                        m.d.comb += [
                            q.w_data.eq(fixed),
                            q.w_en.eq(1),
                            iq.r_en.eq(q.w_rdy),
                            illegal.eq(q.w_rdy & bad_flags),
                        ]
                with m.Case(Opcode.FENCE):
                    m.d.comb += [
                        iq.r_en.eq(engines_idle),
                        dispatch_retire.eq(engines_idle),
                        illegal.eq(engines_idle & bad_flags),
                    ]
                with m.Default():
                    m.d.comb += [iq.r_en.eq(1), dispatch_retire.eq(1), illegal.eq(1)]

        # ---- status and counters ----
        busy = Signal()
        m.d.comb += [busy.eq(iq.r_rdy | ~engines_idle), self.busy.eq(busy)]
        errors = Signal(len(ERRORS))
        err = {name: Signal(name=f"err_{name}") for name in ERRORS}
        m.d.comb += [
            err["illegal_insn"].eq(illegal),
            err["load_range"].eq(load.range_error),
            err["compute_range"].eq(comp.range_error),
            err["store_range"].eq(store.range_error),
            err["dma_align"].eq(load.dma_error.align | store.dma_error.align),
            err["dma_window"].eq(load.dma_error.window | store.dma_error.window),
            err["dma_read_bus"].eq(load.dma_error.bus),
            err["dma_write_bus"].eq(store.dma_error.bus),
            err["array"].eq(comp.array_error),
            err["token_overflow"].eq(Cat(overflows).any()),
        ]
        increments = {
            "cycles": busy,
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
            "dma_write_bytes": store.bytes,
        }
        assert tuple(increments) == COUNTERS
        counters = [Signal(64, name=f"count_{name}") for name in COUNTERS]

        # ---- host registers ----
        m.submodules.regs = port = AxiLiteRegisterPort(addr_bits=REG_ADDR_BITS)
        wiring.connect(m, wiring.flipped(self.s_axil), port.axil)
        insn_words = [Signal(32, name=f"insn_word{i}") for i in range(3)]
        clear_errors = Signal()
        clear_counters = Signal()
        overflow = Signal()
        byte_addr = Signal(REG_ADDR_BITS)
        m.d.comb += byte_addr.eq(port.reg_addr << 2)
        with m.If(port.reg_we):
            with m.Switch(byte_addr):
                for i in range(3):
                    with m.Case(Reg.INSN0 + 4 * i):
                        m.d.sync += insn_words[i].eq(port.reg_wdata)
                with m.Case(Reg.INSN3):
                    m.d.comb += [
                        iq.w_data.eq(Cat(*insn_words, port.reg_wdata)),
                        iq.w_en.eq(1),
                        overflow.eq(~iq.w_rdy),
                    ]
                with m.Case(Reg.CONTROL):
                    m.d.comb += [
                        clear_errors.eq(port.reg_wdata[0]),
                        clear_counters.eq(port.reg_wdata[1]),
                    ]
        m.d.comb += err["queue_overflow"].eq(overflow)

        new_errors = Cat(err[name] for name in ERRORS)
        with m.If(clear_errors):
            m.d.sync += errors.eq(new_errors)
        with m.Else():
            m.d.sync += errors.eq(errors | new_errors)
        for counter, name in zip(counters, COUNTERS, strict=True):
            with m.If(clear_counters):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + increments[name])

        status = Cat(busy, ~iq.w_rdy, Const(0, 14), errors)
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
            for i, counter in enumerate(counters):
                with m.Case(COUNTER_BASE + 8 * i):
                    m.d.comb += rdata.eq(counter[:32])
                with m.Case(COUNTER_BASE + 8 * i + 4):
                    m.d.comb += rdata.eq(counter[32:])
        with m.If(port.reg_re):
            m.d.sync += port.reg_rdata.eq(rdata)
        return m
