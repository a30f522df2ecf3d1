"""Why each known surviving yosys mutant survives: equivalent, or a hole that was closed.

Keyed by ``<target>: <mutate command>`` (the sample is seeded, so the same mutants come back
while the generated Verilog is unchanged). A survivor that is not listed here is reported as
unexplained and fails the run: it needs triage (prove it equivalent, or add a test).
"""

from __future__ import annotations

__all__ = ["EXPLAINED"]

#: The accelerator target's mutable modules are below this one (its name hashes the config).
_ACCEL = "cdm_qta_sim_n4_model_ce1b2a2e.core.accel"

EXPLAINED: dict[str, str] = {
    # pe_0_3 is the last PE of row 0 at N=4: hw/array.py wires a PE's token only into its right
    # neighbour, so the last column's tok_out drives nothing (only d_out and the corner PE's
    # flags leave the grid). Any change to it is invisible by construction.
    "core: mutate -mode cnot1 -module cdm_qta_array_n4_i8_a32.core.array -cell pe_0_3 "
    "-port tok_out -portbit 1 -ctrlbit 0": "equivalent: the last column's tok_out has no reader",
    # The reader's planner, g_addr's next state: $83 = $68 ? c.dram_addr : ($70 ? $3 : g_addr)
    # with $3 = $68 ? x : $procmux$1891 and $procmux$1891 = $70 ? (the burst's next address)
    # : x. Port A of $procmux$1891 is proc's undefined "else", selected only when $70 (fire &
    # g_active) is 0, and then $procmux$1897, its only reader, takes g_addr instead.
    "dma: mutate -mode const1 -module cdm_qta_dma_top_w8_r20_o8.reader.plan "
    "-cell $procmux$1891 -port A -portbit 23": "equivalent: a don't-care mux input no path "
    "selects (port A of $procmux$1891 is read only when $70 = 0, where $procmux$1897 takes "
    "g_addr)",
    # The reader's assembly register: $procmux$2240 is `asm` kept as it is (port B) when the
    # R beat ends the row ($206 = row_last); the mutation XORs asm[34] into asm[0] there. After
    # a row's last beat slot = 0, and the next row's byte 0 comes from rdata (a row-final beat
    # in slot 0 reads rbyte, an earlier one writes asm[0..7] first): merged reads asm[i] only
    # for slot > i // W. So asm's value after a row end is dead.
    "dma: mutate -mode cnot1 -module cdm_qta_dma_top_w8_r20_o8.reader -cell $procmux$2240 "
    "-port B -portbit 0 -ctrlbit 34": "equivalent: asm after a row's final beat is never read "
    "(the next row overwrites asm[0..7] in slot 0 before any slot > 0 reads them)",
    # The reader's planner, g_addr[24] tied to 0. Every accepted command lies in the DMA test
    # top's window [0x2000, 0xE000) (the window check uses c, wide enough not to wrap), and
    # every burst and row address of it is below its end, so g_addr < 2**16: bit 24 is 0 in
    # the genuine design too (reset 0, and no carry reaches it).
    "dma: mutate -mode const0 -module cdm_qta_dma_top_w8_r20_o8.reader.plan "
    "-cell $procmux$1873 -port Y -portbit 24": "equivalent: g_addr[24] is always 0 (every "
    "address the planner holds lies in the 16-bit DRAM window)",
    # The accelerator target (N=4: a 4-byte bus, 16-byte output rows, DRAM window [0, 2**16)).
    # The writer's planner: cap = Mux(to_page > 256, 256, to_page) with the constant 256 made
    # 384. A STORE row is at most output_row_bytes = 16 bytes (longer is an align error), i.e.
    # 4 beats: beats_row <= 4 < cap whenever to_page > 256, so row_end and beats are the same.
    f"accelerator: mutate -mode const1 -module {_ACCEL}.dma_write.plan "
    "-cell $gt$mutable.v:8247$4409 -port B -portbit 7": "equivalent at this configuration: the "
    "256-beat limit never binds on rows of at most 4 beats",
    # The writer's done FIFO: $procmux$8229 is the data of the storage write port, w_port__en ?
    # w_port__data : x; the write's enable is w_port__en too, so port A (the x) is never
    # written.
    f"accelerator: mutate -mode const0 -module {_ACCEL}.dma_write.done_q "
    "-cell $procmux$8229 -port A -portbit 0": "equivalent: a don't-care mux input (the "
    "memory write's data while its enable is low)",
    # The writer's planner: g_stride held (port A of the load mux) with bit 17 XORed into bit
    # 20. g_stride is reloaded with every command and read only to step to a next row: with
    # rows >= 2 the window check (wide, no wrap) bounds (rows - 1) * stride below 2**16, so
    # bits 17 and 20 are 0; with rows = 1 any stride is legal but never used.
    f"accelerator: mutate -mode cnot1 -module {_ACCEL}.dma_write.plan -cell $procmux$8004 "
    "-port A -portbit 20 -ctrlbit 17": "equivalent at this configuration: a stride with bit "
    "17 set is used by no row inside the 2**16-byte DRAM window",
    # The writer's planner: the next row's address g_row_addr + g_stride with bit 29 XORed
    # into bit 3. The sum is taken only to step to a next row of the command, which lies in
    # the 16-bit DRAM window: bit 29 of it is 0 there.
    f"accelerator: mutate -mode cnot1 -module {_ACCEL}.dma_write.plan "
    "-cell $add$mutable.v:8305$4467 -port Y -portbit 3 -ctrlbit 29": "equivalent at this "
    "configuration: bit 29 of every next-row address inside the 2**16-byte window is 0",
    # LOAD's started FIFO: $procmux$6997 is the storage write's per-bit enable, w_port__en ?
    # all ones : 0; the mutation turns bit 5 on while the port is disabled. proc gave that
    # write the address and data x (w_port__en ? w_port__addr : x), and a simulator drops a
    # write to an x address, so no test can see it (more_transfers_than_fit_in_flight runs the
    # FIFO full, where a real write pointer would hit the head). Equivalent in simulation only:
    # a synthesis tool may pick any address for the x.
    f"accelerator: mutate -mode cnot0 -module {_ACCEL}.load.started -cell $procmux$6997 "
    "-port Y -portbit 5 -ctrlbit 3": "equivalent in simulation: the extra enable writes x "
    "data to an x address (the disabled port's don't-cares), which the simulator drops",
}

# The fetch's AR payload {arlen, araddr} on its way to the read arbiter: arlen[7] XOR
# araddr[17]. The fetch's DMA reader accepts only programs inside the 16-bit DRAM window, so
# araddr[17] is always 0 and arlen unchanged. Amaranth numbers this anonymous port from a
# counter that unrelated edits shift: both names were generated for the same design.
for _port in ("port$3689$0", "port$3701$0"):
    EXPLAINED[
        f"accelerator: mutate -mode cnot1 -module {_ACCEL} -cell fetch -port {_port} "
        "-portbit 39 -ctrlbit 17"
    ] = "equivalent at this configuration: araddr[17] is 0 inside the 2**16-byte DRAM window"
