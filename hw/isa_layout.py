"""Amaranth views of the instruction words, built from :data:`cdm_qta.hw.isa.FIELDS`.

The hardware decoder reads fields through these layouts, the software encodes with
:mod:`cdm_qta.hw.isa`; both come from the same table, so they cannot disagree.
"""

from __future__ import annotations

from functools import cache

from amaranth.lib import data

from .isa import FIELDS, HEADER, INSN_BITS, Opcode

__all__ = ["header_layout", "insn_layout"]


@cache
def insn_layout(opcode: Opcode) -> data.StructLayout:
    """The 128-bit layout of one opcode's instruction word (header, fields, padding)."""
    fields: dict[str, int] = {}
    used = 0
    for name, bits in HEADER + FIELDS[opcode]:
        fields[name] = bits
        used += bits
    fields["_pad"] = INSN_BITS - used
    return data.StructLayout(fields)


@cache
def header_layout() -> data.StructLayout:
    used = sum(bits for _, bits in HEADER)
    return data.StructLayout({**dict(HEADER), "_pad": INSN_BITS - used})
