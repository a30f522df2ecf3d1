"""Host register map of the accelerator (AXI4-Lite, 32-bit words). No Amaranth imports.

The register file in :mod:`cdm_qta.hw.accelerator` and the host code in :mod:`cdm_qta.sw` and
:mod:`cdm_qta.tb` both read these tables, so an address is written down exactly once.

=======  ===========  ====  =================================================================
address  name         dir   meaning
=======  ===========  ====  =================================================================
0x00     ID           RO    ``MAGIC`` (ASCII "QTA" + version)
0x04     CONFIG       RO    N [15:0], log2(DRAM bus bytes) [19:16]
0x08     STATUS       RO    [0] busy, [1] instruction queue full, [2] fetching, [3] done,
                            [31:16] sticky error bits (:data:`ERRORS`)
0x0C     CONTROL      WO    [0] clear the error bits, [1] clear the counters, [2] start the
                            program at FETCH_ADDR (clears ``done``), [3] clear ``done``
0x10     INSN0..3     WO    instruction word, 32 bits each, least significant first;
 ..0x1C                     writing INSN3 queues the 128-bit instruction
0x20     QUEUE_SPACE  RO    free entries in the instruction queue (queueing into a full
                            queue, or while a program is fetched, drops the instruction and
                            sets ``queue_overflow``)
0x24     FETCH_ADDR   RW    DRAM byte address of a program (a multiple of max(16, bus bytes))
0x28     FETCH_COUNT  RW    its length in 128-bit instruction words
0x40+    counters     RO    64-bit counters, low word first (read them while idle)
=======  ===========  ====  =================================================================

Running a program: write its words to DRAM (little-endian 128-bit words), write FETCH_ADDR and
FETCH_COUNT, then CONTROL with bit 2 (and bits 0-1 to clear errors and counters). The
accelerator fetches the words into its queue and executes them; when every word is fetched and
every instruction retired, STATUS.done and the ``done`` output go high (they stay high until
the next start or CONTROL[3]). A program that deadlocks on tokens is flushed: its waiting
instructions are dropped, ``deadlock`` is set and ``done`` rises all the same.
"""

from __future__ import annotations

import enum

__all__ = [
    "CONTROL_BITS",
    "COUNTERS",
    "COUNTER_BASE",
    "ERRORS",
    "MAGIC",
    "STATUS_BITS",
    "Reg",
    "counter_address",
]

MAGIC = 0x51544102  # "QTA", version 2: instruction fetch, done, deadlock detection


class Reg(enum.IntEnum):
    ID = 0x00
    CONFIG = 0x04
    STATUS = 0x08
    CONTROL = 0x0C
    INSN0 = 0x10
    INSN1 = 0x14
    INSN2 = 0x18
    INSN3 = 0x1C
    QUEUE_SPACE = 0x20
    FETCH_ADDR = 0x24
    FETCH_COUNT = 0x28


#: STATUS[15:0] flags, by bit.
STATUS_BITS: dict[str, int] = {"busy": 0, "queue_full": 1, "fetching": 2, "done": 3}

#: CONTROL bits, by name.
CONTROL_BITS: dict[str, int] = {
    "clear_errors": 0,
    "clear_counters": 1,
    "start": 2,
    "clear_done": 3,
}


#: Sticky error bits of STATUS[31:16], in bit order (bit 16 first).
ERRORS: tuple[str, ...] = (
    "illegal_insn",  # unknown opcode, or token flags the engine does not have
    "queue_overflow",  # an instruction was written into a full queue and dropped
    "load_range",  # LOAD rows outside the input/weight buffer
    "compute_range",  # COMPUTE shape or rows outside the array or the buffers
    "store_range",  # STORE rows outside the output buffer
    "dma_align",  # DRAM address/stride not bus aligned, or row_bytes 0 or too long
    "dma_window",  # a transfer outside the DRAM window (no bus access was made)
    "dma_read_bus",  # SLVERR/DECERR on a read
    "dma_write_bus",  # SLVERR/DECERR on a write
    "array",  # the array core flagged a protocol error (never expected)
    "token_overflow",  # more than 255 tokens outstanding between two engines
    "fetch_align",  # FETCH_ADDR not a multiple of max(16, bus bytes), or FETCH_COUNT too large
    "fetch_window",  # the program lies outside the DRAM window (nothing was read)
    "fetch_bus",  # SLVERR/DECERR while reading the program
    "fetch_busy",  # a start while a program was still being fetched (ignored)
    "deadlock",  # every engine waits for a token no instruction can push: the program was flushed
)
assert len(ERRORS) <= 16, "STATUS has 16 error bits"

COUNTER_BASE = 0x40

#: 64-bit performance counters from ``COUNTER_BASE`` on, 8 bytes each, in this order.
COUNTERS: tuple[str, ...] = (
    "cycles",  # cycles in which anything was queued or running
    "load_busy",
    "load_wait_token",
    "load_wait_bus",
    "compute_busy",
    "compute_wait_token",
    "compute_wait_array",  # a beat ready for the array but the array not taking it
    "store_busy",
    "store_wait_token",
    "store_wait_bus",
    "macs",  # useful multiply-accumulates (inside the tile shapes, not padding)
    "insns_retired",
    "dma_read_bytes",
    "dma_write_bytes",
)


def counter_address(name: str) -> int:
    """Byte address of the low word of counter ``name``."""
    return COUNTER_BASE + 8 * COUNTERS.index(name)
