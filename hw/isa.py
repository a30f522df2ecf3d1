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
       DRAM ``[dram_addr + r*stride, + row_bytes)`` for ``r < rows``; bytes at and above
       ``row_bytes`` in those SRAM rows become zero (the DMA delivers whole rows).
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
import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "FIELDS",
    "INSN_BITS",
    "TOKEN_FLAGS",
    "TOKEN_MAX",
    "TOKEN_QUEUES",
    "Buffer",
    "Compute",
    "Engine",
    "Fence",
    "IllegalInstruction",
    "Instruction",
    "Load",
    "Opcode",
    "Store",
    "TokenQueue",
    "decode",
    "disassemble",
    "engine_of",
    "field_bits",
    "field_max",
    "legal_flags",
    "load_program",
    "pops",
    "pushes",
    "save_program",
    "token_queue",
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


class Engine(enum.IntEnum):
    """The engines, in pipeline order: LOAD's next is COMPUTE, COMPUTE's next is STORE.

    Each runs its own instructions in program order; they meet only through the dependency
    tokens of :data:`TOKEN_QUEUES`, which connect neighbours in this order.
    """

    LOAD = 0
    COMPUTE = 1
    STORE = 2

    @property
    def prev(self) -> Engine | None:
        """The engine before this one in the pipeline (``None`` for LOAD)."""
        return Engine(self - 1) if self > Engine.LOAD else None

    @property
    def next(self) -> Engine | None:
        """The engine after this one in the pipeline (``None`` for STORE)."""
        return Engine(self + 1) if self < Engine.STORE else None

    @property
    def label(self) -> str:
        """Lower-case name, as in counter names (``load_busy``) and reports."""
        return self.name.lower()


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
# LOAD and STORE drive the same DMA command, so their transfer fields must agree.
for _name in ("sram_row", "rows", "row_bytes", "dram_addr", "stride"):
    assert dict(FIELDS[Opcode.LOAD])[_name] == dict(FIELDS[Opcode.STORE])[_name], _name


def field_bits(opcode: Opcode, name: str) -> int:
    """Width of field ``name`` of ``opcode`` (header fields included)."""
    try:
        return dict(HEADER + FIELDS[opcode])[name]
    except KeyError:
        raise KeyError(f"{opcode.name} has no field {name!r}") from None


def field_max(opcode: Opcode, name: str) -> int:
    """Largest value field ``name`` of ``opcode`` can carry."""
    return (1 << field_bits(opcode, name)) - 1


# -- engines and dependency tokens ---------------------------------------------------------------

#: The engine that executes each opcode; FENCE is executed by the dispatcher itself.
ENGINE_OF: dict[Opcode, Engine] = {
    Opcode.LOAD: Engine.LOAD,
    Opcode.COMPUTE: Engine.COMPUTE,
    Opcode.STORE: Engine.STORE,
}

#: The token flags of the header, in header order.
TOKEN_FLAGS: tuple[str, ...] = ("pop_prev", "pop_next", "push_prev", "push_next")


@dataclasses.dataclass(frozen=True)
class TokenQueue:
    """One dependency-token counter: ``producer`` pushes, its neighbour ``consumer`` pops."""

    producer: Engine
    consumer: Engine

    def __post_init__(self) -> None:
        if self.consumer not in (self.producer.prev, self.producer.next):
            raise ValueError(
                f"no token queue between {self.producer.name} and {self.consumer.name}"
            )

    @property
    def name(self) -> str:
        """Short name, as in the hardware's counters: ``l2c``, ``c2l``, ``c2s``, ``s2c``."""
        return f"{self.producer.name[0]}2{self.consumer.name[0]}".lower()

    @property
    def push_flag(self) -> str:
        """The producer's flag that pushes into this queue."""
        return "push_next" if self.consumer == self.producer.next else "push_prev"

    @property
    def pop_flag(self) -> str:
        """The consumer's flag that pops from this queue."""
        return "pop_prev" if self.producer == self.consumer.prev else "pop_next"

    def __str__(self) -> str:
        return f"{self.producer.label}->{self.consumer.label}"


#: The four counters, as in VTA: between each pair of neighbouring engines, in both directions.
TOKEN_QUEUES: tuple[TokenQueue, ...] = (
    TokenQueue(Engine.LOAD, Engine.COMPUTE),
    TokenQueue(Engine.COMPUTE, Engine.LOAD),
    TokenQueue(Engine.COMPUTE, Engine.STORE),
    TokenQueue(Engine.STORE, Engine.COMPUTE),
)


def token_queue(producer: Engine, consumer: Engine) -> TokenQueue:
    """The queue from ``producer`` to ``consumer``; :class:`ValueError` unless neighbours."""
    return TokenQueue(Engine(producer), Engine(consumer))


@functools.cache  # 3 engines x 4 flags; asked once per flag of every instruction checked
def _flag_queue(engine: Engine, flag: str) -> TokenQueue | None:
    side = engine.prev if flag.endswith("_prev") else engine.next
    if side is None:
        return None
    return TokenQueue(side, engine) if flag.startswith("pop") else TokenQueue(engine, side)


def legal_flags(opcode: Opcode) -> frozenset[str]:
    """The token flags an opcode may set: those that name an existing neighbour engine.

    LOAD has no previous engine, STORE no next one, and FENCE no engine at all; any other flag
    is illegal (the hardware flags the instruction and ignores the flag).
    """
    engine = ENGINE_OF.get(Opcode(opcode))
    if engine is None:
        return frozenset()
    return frozenset(f for f in TOKEN_FLAGS if _flag_queue(engine, f) is not None)


def field_offsets(opcode: Opcode) -> dict[str, tuple[int, int]]:
    """``name -> (lsb offset, width)`` for every field of ``opcode``, header included."""
    return {name: (at, bits) for name, at, bits in _offsets(opcode)}


@functools.cache
def _offsets(opcode: Opcode) -> tuple[tuple[str, int, int], ...]:
    """(name, lsb offset, width) per field: computed once per opcode, as encoding and decoding
    every word of a long program ask for it each time."""
    out: list[tuple[str, int, int]] = []
    at = 0
    for name, bits in HEADER + FIELDS[opcode]:
        out.append((name, at, bits))
        at += bits
    return tuple(out)


@functools.cache
def _field_kinds(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, whether a flag) per dataclass field of an instruction class, in order."""
    return tuple((f.name, isinstance(f.default, bool)) for f in dataclasses.fields(cls))


@dataclasses.dataclass(frozen=True)
class Instruction:
    """Base of the typed instructions; ``encode()`` gives the 128-bit word."""

    OPCODE: ClassVar[Opcode]

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def fields(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name, _ in _field_kinds(type(self))}

    def encode(self) -> int:
        word = 0
        values = {"opcode": int(self.OPCODE), **self.fields()}
        for name, at, bits in _offsets(self.OPCODE):
            value = values[name]
            if not 0 <= value < (1 << bits):
                raise IllegalInstruction(
                    f"{type(self).__name__}.{name} = {value} does not fit in {bits} bits"
                )
            word |= value << at
        return word

    @property
    def flags(self) -> frozenset[str]:
        """The token flags this instruction sets (legal or not)."""
        return frozenset(f for f in TOKEN_FLAGS if getattr(self, f))

    @property
    def illegal_flags(self) -> frozenset[str]:
        """Set flags the opcode does not have (see :func:`legal_flags`)."""
        return self.flags - legal_flags(self.OPCODE)

    def __str__(self) -> str:
        tags = {"pop_prev": "<p", "pop_next": "<n", "push_prev": ">p", "push_next": ">n"}
        deps = "".join(tags[f] for f in TOKEN_FLAGS if getattr(self, f))
        args = ", ".join(f"{k}={v}" for k, v in self.fields().items() if k not in TOKEN_FLAGS)
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


def engine_of(insn: Instruction) -> Engine | None:
    """The engine that executes ``insn`` (``None`` for FENCE)."""
    return ENGINE_OF.get(insn.OPCODE)


def pops(insn: Instruction) -> tuple[TokenQueue, ...]:
    """Queues ``insn`` takes a token from before it starts (its legal pop flags only)."""
    engine = engine_of(insn)
    if engine is None:
        return ()
    found = (_flag_queue(engine, f) for f in ("pop_prev", "pop_next") if getattr(insn, f))
    return tuple(q for q in found if q is not None)


def pushes(insn: Instruction) -> tuple[TokenQueue, ...]:
    """Queues ``insn`` gives a token to when it is done (its legal push flags only)."""
    engine = engine_of(insn)
    if engine is None:
        return ()
    found = (_flag_queue(engine, f) for f in ("push_prev", "push_next") if getattr(insn, f))
    return tuple(q for q in found if q is not None)


def decode(word: int) -> Instruction:
    """The typed instruction of a 128-bit word; :class:`IllegalInstruction` if there is none."""
    if not 0 <= word < (1 << INSN_BITS):
        raise IllegalInstruction(f"not a {INSN_BITS}-bit word: {word:#x}")
    raw = word & 0b111
    try:
        opcode = Opcode(raw)
    except ValueError:
        raise IllegalInstruction(f"unknown opcode {raw} in {word:#034x}") from None
    offsets = _offsets(opcode)
    values = {
        name: (word >> at) & ((1 << bits) - 1) for name, at, bits in offsets if name != "opcode"
    }
    used = sum(bits for _, _, bits in offsets)
    if word >> used:
        raise IllegalInstruction(f"{opcode.name} has non-zero unused bits: {word:#034x}")
    cls = _CLASSES[opcode]
    kwargs: dict[str, Any] = {}
    for name, flag in _field_kinds(cls):
        v = values[name]
        kwargs[name] = bool(v) if flag else v
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
