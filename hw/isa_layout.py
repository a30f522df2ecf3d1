"""Amaranth views of the ISA: instruction layouts from :data:`cdm_qta.hw.isa.FIELDS`, and the
engines' token ports from :class:`cdm_qta.hw.isa.Engine`.

The hardware decoder reads fields through these layouts, the software encodes with
:mod:`cdm_qta.hw.isa`; both come from the same table, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .isa import FIELDS, HEADER, INSN_BITS, Engine, Opcode

__all__ = ["header_layout", "insn_layout", "intake", "token_members"]


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


def token_members(engine: Engine) -> dict[str, wiring.Member]:
    """An engine's ends of the dependency-token counters, for the sides it has neighbours on.

    Per side (``prev``/``next``, :meth:`cdm_qta.hw.isa.Engine.prev`): ``has_<side>`` (In) says
    the counter the engine pops from is non-zero; ``pop_<side>`` and ``push_<side>`` (Out) are
    one-cycle strobes. The names match the instruction's flags, so the accelerator wires every
    counter of :data:`cdm_qta.hw.isa.TOKEN_QUEUES` the same way.
    """
    members: dict[str, wiring.Member] = {}
    for side in ("prev", "next"):
        if getattr(engine, side) is not None:
            members[f"has_{side}"] = In(1)
            members[f"pop_{side}"] = Out(1)
            members[f"push_{side}"] = Out(1)
    return members


def intake(
    m: Module,
    engine: wiring.Component,
    tokens_ok: Value,
    pops: Sequence[str],
    room: Value | int = 1,
) -> Signal:
    """Take the head instruction once its tokens are there; drop it unexecuted while flushing.

    Drives the engine's ``insn.ready``, ``wait_token`` and pop strobes (``pops``: its pop flag
    names) and returns the "execute it" strobe; ``room`` says the engine can take another
    instruction (waiting for room is not waiting for a token). Every engine takes
    instructions through here, so a deadlock flush (:mod:`cdm_qta.hw.accelerator`, ``flush``
    high) drains them all the same way: no token taken or given, nothing executed or retired.
    """
    take = Signal()
    head = engine.insn.payload
    m.d.comb += [
        take.eq(engine.insn.valid & tokens_ok & room & ~engine.flush),
        engine.insn.ready.eq((tokens_ok & room) | engine.flush),
        engine.wait_token.eq(engine.insn.valid & ~tokens_ok & ~engine.flush),
        *[getattr(engine, f).eq(take & getattr(head, f)) for f in pops],
    ]
    return take
