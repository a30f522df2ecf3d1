"""The accelerator's instruction set: one encoding for the decoder, the compiler and the tests.

No Amaranth imports: :mod:`cdm_qta.sw` encodes with these classes, the hardware decoder builds
its bit layouts from :data:`FIELDS` (see :func:`cdm_qta.hw.isa_layout.decoder_layout`), and a
saved instruction stream is plain data (``.npy``/JSON of 128-bit words) that can be
disassembled and replayed.

Instruction word: 128 bits, little-endian fields, LSB first. Every instruction starts with the
same header; the rest of the bits depend on the opcode::

    [2:0]  opcode        Opcode
    [3]    pop_prev      wait for, and take, a token from the previous engine
    [4]    pop_next      wait for, and take, a token from the next engine
    [5]    push_prev     give a token to the previous engine when done
    [6]    push_next     give a token to the next engine when done

Engines run concurrently, each in program order: LOAD (prev: none, next: COMPUTE), COMPUTE
(prev: LOAD, next: STORE), STORE (prev: COMPUTE, next: none). Tokens are VTA's dependency
tokens: e.g. a LOAD into a buffer half that a COMPUTE still reads must ``pop_next`` a token the
COMPUTE pushed (``push_prev``) when it finished with that half.

Semantics (N = array size, W = DRAM bus bytes, R = SRAM row bytes: N for the input and weight
buffers, 4N for the output buffer):

LOAD   ``buffer`` (INPUT/WEIGHT) row ``sram_row + r`` bytes ``[0, row_bytes)`` <-
       DRAM ``[dram_addr + r*stride, + row_bytes)`` for ``r < rows``. Bytes at and above
       ``row_bytes`` in those SRAM rows are unspecified (compute never reads them).
COMPUTE ``dataflow`` WS: weights = weight rows ``b_row .. b_row+k-1`` (lanes < c), inputs = input
       rows ``a_row .. a_row+m-1`` (lanes < k); ``k, c <= N``, any ``m``.
       OS: input rows ``a_row .. a_row+k-1`` hold columns of A (lanes < m), weight rows
       ``b_row .. b_row+k-1`` hold rows of B (lanes < c); ``m, c <= N``, any ``k``.
       Both: output row ``out_row + i`` lanes ``j < c`` (i < m) become
       ``(old if accumulate else 0) + sum_t A[i, t] * B[t, j]`` in wrapping INT32; other lanes
       and rows are unchanged.
STORE  DRAM ``[dram_addr + r*stride, + row_bytes)`` <- output row ``sram_row + r`` bytes
       ``[0, row_bytes)`` (INT32 lanes, little-endian) for ``r < rows``.
FENCE  dispatch waits until every earlier instruction has retired.

Rules whose violation sets an error bit (the instruction is skipped, its tokens are still
pushed so nothing waits forever): ``dram_addr`` and ``stride`` multiples of W, the transfer
inside the DRAM window, ``1 <= row_bytes <= R``, SRAM rows inside the buffer, compute shapes as
above, opcode known, token flags legal for the engine.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "FIELDS",
    "INSN_BITS",
    "TOKEN_MAX",
    "Buffer",
    "Compute",
    "Fence",
    "IllegalInstruction",
    "Instruction",
    "Load",
    "Opcode",
    "Store",
    "decode",
    "disassemble",
    "load_program",
    "save_program",
]

INSN_BITS = 128

#: Tokens each of the four dependency counters holds at most; a push beyond sets the
#: ``token_overflow`` error, and the compiler refuses programs that could get there.
TOKEN_MAX = 255


class Opcode(enum.IntEnum):
    """3-bit opcode; 0 is illegal so that zeroed memory never executes."""

    LOAD = 1
    COMPUTE = 2
    STORE = 3
    FENCE = 4


class Buffer(enum.IntEnum):
    INPUT = 0
    WEIGHT = 1


class IllegalInstruction(ValueError):
    """A word that is not a valid instruction, or a field that does not fit its width."""


#: Header fields shared by every opcode: (name, bits).
HEADER: tuple[tuple[str, int], ...] = (
    ("opcode", 3),
    ("pop_prev", 1),
    ("pop_next", 1),
    ("push_prev", 1),
    ("push_next", 1),
)

#: Per-opcode fields after the header, LSB first: (name, bits). The one definition of the
#: encoding; field widths are fixed (not per configuration) so a saved program stays valid.
FIELDS: dict[Opcode, tuple[tuple[str, int], ...]] = {
    Opcode.LOAD: (
        ("buffer", 1),
        ("sram_row", 20),
        ("rows", 16),
        ("row_bytes", 12),
        ("dram_addr", 32),
        ("stride", 32),
    ),
    Opcode.COMPUTE: (
        ("dataflow", 1),
        ("accumulate", 1),
        ("a_row", 20),
        ("b_row", 20),
        ("out_row", 20),
        ("k", 16),
        ("m", 16),
        ("c", 16),
    ),
    Opcode.STORE: (
        ("sram_row", 20),
        ("rows", 16),
        ("row_bytes", 12),
        ("dram_addr", 32),
        ("stride", 32),
    ),
    Opcode.FENCE: (),
}

for _op, _fields in FIELDS.items():
    assert sum(b for _, b in HEADER + _fields) <= INSN_BITS, _op


def field_offsets(opcode: Opcode) -> dict[str, tuple[int, int]]:
    """``name -> (lsb offset, width)`` for every field of ``opcode``, header included."""
    out: dict[str, tuple[int, int]] = {}
    at = 0
    for name, bits in HEADER + FIELDS[opcode]:
        out[name] = (at, bits)
        at += bits
    return out


@dataclasses.dataclass(frozen=True)
class Instruction:
    """Base of the typed instructions; ``encode()`` gives the 128-bit word."""

    OPCODE: ClassVar[Opcode]

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def fields(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def encode(self) -> int:
        word = 0
        values = {"opcode": int(self.OPCODE), **self.fields()}
        for name, (at, bits) in field_offsets(self.OPCODE).items():
            value = values[name]
            if not 0 <= value < (1 << bits):
                raise IllegalInstruction(
                    f"{type(self).__name__}.{name} = {value} does not fit in {bits} bits"
                )
            word |= value << at
        return word

    def __str__(self) -> str:
        deps = "".join(
            tag
            for tag, on in (
                ("<p", self.pop_prev),
                ("<n", self.pop_next),
                (">p", self.push_prev),
                (">n", self.push_next),
            )
            if on
        )
        args = ", ".join(
            f"{k}={v}"
            for k, v in self.fields().items()
            if k not in ("pop_prev", "pop_next", "push_prev", "push_next")
        )
        return f"{self.OPCODE.name:<7} {args}" + (f"  [{deps}]" if deps else "")


@dataclasses.dataclass(frozen=True)
class Load(Instruction):
    OPCODE: ClassVar[Opcode] = Opcode.LOAD
    buffer: Buffer = Buffer.INPUT
    sram_row: int = 0
    rows: int = 1
    row_bytes: int = 1
    dram_addr: int = 0
    stride: int = 0


@dataclasses.dataclass(frozen=True)
class Compute(Instruction):
    OPCODE: ClassVar[Opcode] = Opcode.COMPUTE
    dataflow: int = 0  # cdm_qta.hw.config.Dataflow
    accumulate: bool = False
    a_row: int = 0
    b_row: int = 0
    out_row: int = 0
    k: int = 1
    m: int = 1
    c: int = 1


@dataclasses.dataclass(frozen=True)
class Store(Instruction):
    OPCODE: ClassVar[Opcode] = Opcode.STORE
    sram_row: int = 0
    rows: int = 1
    row_bytes: int = 4
    dram_addr: int = 0
    stride: int = 0


@dataclasses.dataclass(frozen=True)
class Fence(Instruction):
    OPCODE: ClassVar[Opcode] = Opcode.FENCE


_CLASSES: dict[Opcode, type[Instruction]] = {
    Opcode.LOAD: Load,
    Opcode.COMPUTE: Compute,
    Opcode.STORE: Store,
    Opcode.FENCE: Fence,
}


def decode(word: int) -> Instruction:
    """The typed instruction of a 128-bit word; :class:`IllegalInstruction` if there is none."""
    if not 0 <= word < (1 << INSN_BITS):
        raise IllegalInstruction(f"not a {INSN_BITS}-bit word: {word:#x}")
    raw = word & 0b111
    try:
        opcode = Opcode(raw)
    except ValueError:
        raise IllegalInstruction(f"unknown opcode {raw} in {word:#034x}") from None
    offsets = field_offsets(opcode)
    values = {
        name: (word >> at) & ((1 << bits) - 1)
        for name, (at, bits) in offsets.items()
        if name != "opcode"
    }
    used = sum(bits for _, bits in offsets.values())
    if word >> used:
        raise IllegalInstruction(f"{opcode.name} has non-zero unused bits: {word:#034x}")
    cls = _CLASSES[opcode]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        v = values[f.name]
        kwargs[f.name] = bool(v) if isinstance(f.default, bool) else v
    if opcode == Opcode.LOAD:
        kwargs["buffer"] = Buffer(kwargs["buffer"])
    return cls(**kwargs)


def disassemble(words: Iterable[int]) -> str:
    """One line per instruction: index, hex word, mnemonic and fields."""
    lines = []
    for i, w in enumerate(words):
        try:
            text = str(decode(w))
        except IllegalInstruction as exc:
            text = f"<illegal: {exc}>"
        lines.append(f"{i:5d}  {w:032x}  {text}")
    return "\n".join(lines)


def save_program(path: Path, program: Sequence[Instruction]) -> None:
    """Write a program as JSON: hex words plus their disassembly for people."""
    words = [insn.encode() for insn in program]
    path = Path(path)
    doc = {"format": "cdm-qta-program/1", "words": [f"{w:032x}" for w in words]}
    doc["disassembly"] = disassemble(words).splitlines()
    path.write_text(json.dumps(doc, indent=1) + "\n")


def load_program(path: Path) -> list[Instruction]:
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != "cdm-qta-program/1":
        raise IllegalInstruction(f"{path}: not a cdm-qta program file")
    return [decode(int(w, 16)) for w in doc["words"]]
