"""The ISA encoding round-trips, rejects what does not fit, and its program files replay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cdm_qta.hw.isa import (
    FIELDS,
    INSN_BITS,
    TOKEN_FLAGS,
    TOKEN_QUEUES,
    Buffer,
    Compute,
    Engine,
    Fence,
    IllegalInstruction,
    Instruction,
    Load,
    Opcode,
    Store,
    decode,
    disassemble,
    engine_of,
    field_bits,
    field_max,
    legal_flags,
    load_program,
    pops,
    pushes,
    save_program,
    token_queue,
)

CLASSES: dict[Opcode, type[Instruction]] = {
    Opcode.LOAD: Load,
    Opcode.COMPUTE: Compute,
    Opcode.STORE: Store,
    Opcode.FENCE: Fence,
}
HEADER_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


def random_insn(rng: np.random.Generator, opcode: Opcode) -> Instruction:
    """Every field drawn over its full width (including the extremes 0 and 2**bits - 1)."""
    kwargs: dict[str, object] = {f: bool(rng.integers(2)) for f in HEADER_FLAGS}
    for name, bits in FIELDS[opcode]:
        choice = rng.integers(3)
        value = (0, (1 << bits) - 1, int(rng.integers(0, 1 << bits, dtype=np.uint64)))[choice]
        kwargs[name] = Buffer(value) if name == "buffer" else value
    for f in dataclasses.fields(CLASSES[opcode]):
        if isinstance(f.default, bool):
            kwargs[f.name] = bool(kwargs[f.name])
    return CLASSES[opcode](**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_round_trip_random_fields(opcode: Opcode) -> None:
    seed = 1000 + int(opcode)
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    for _ in range(200):
        insn = random_insn(rng, opcode)
        word = insn.encode()
        assert 0 <= word < 1 << INSN_BITS
        assert word & 0b111 == opcode
        back = decode(word)
        assert back == insn
        assert type(back) is type(insn)
        assert back.encode() == word


def test_fields_fit_the_word() -> None:
    for opcode, fields in FIELDS.items():
        assert 7 + sum(bits for _, bits in fields) <= INSN_BITS, opcode
    assert set(FIELDS) == set(Opcode)


@pytest.mark.parametrize(
    ("insn", "field"),
    [
        (Load(sram_row=1 << 20), "sram_row"),
        (Load(rows=1 << 16), "rows"),
        (Load(row_bytes=1 << 12), "row_bytes"),
        (Load(dram_addr=1 << 32), "dram_addr"),
        (Load(stride=-1), "stride"),
        (Compute(k=1 << 16), "k"),
        (Compute(out_row=1 << 20), "out_row"),
        (Compute(dataflow=2), "dataflow"),
        (Store(stride=1 << 32), "stride"),
    ],
)
def test_field_overflow_raises(insn: Instruction, field: str) -> None:
    with pytest.raises(IllegalInstruction, match=f"{field} = .* does not fit"):
        insn.encode()


@pytest.mark.parametrize("raw", [0, 5, 6, 7])
def test_unknown_opcode_is_illegal(raw: int) -> None:
    with pytest.raises(IllegalInstruction, match="unknown opcode"):
        decode(raw | (1 << 40))


def test_decode_rejects_unused_bits_and_bad_words() -> None:
    with pytest.raises(IllegalInstruction, match="non-zero unused bits"):
        decode(Fence().encode() | (1 << 100))
    with pytest.raises(IllegalInstruction, match="non-zero unused bits"):
        decode(Load().encode() | (1 << 127))
    with pytest.raises(IllegalInstruction, match="128-bit"):
        decode(1 << 128)
    with pytest.raises(IllegalInstruction, match="128-bit"):
        decode(-1)


def test_disassembler_lists_every_word() -> None:
    words = [
        Load(buffer=Buffer.WEIGHT, rows=3, row_bytes=8, push_next=True).encode(),
        Compute(dataflow=1, accumulate=True, k=5, m=2, c=3, pop_prev=True).encode(),
        0,
        Store(rows=2, row_bytes=12, pop_prev=True).encode(),
        Fence().encode(),
    ]
    lines = disassemble(words).splitlines()
    assert len(lines) == 5
    assert "LOAD" in lines[0] and "buffer=1" in lines[0] and "[>n]" in lines[0]
    assert "COMPUTE" in lines[1] and "accumulate=1" in lines[1] and "[<p]" in lines[1]
    assert "<illegal: unknown opcode 0" in lines[2]
    assert lines[3].split()[1] == f"{words[3]:032x}"
    assert lines[4].split()[2] == "FENCE"


def test_save_and_load_program(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    print("seed=7")
    program = [random_insn(rng, op) for op in (*Opcode, *Opcode)]
    path = tmp_path / "prog.json"
    save_program(path, program)
    doc = json.loads(path.read_text())
    assert doc["format"] == "cdm-qta-program/1"
    assert len(doc["disassembly"]) == len(program)
    assert load_program(path) == program


def test_load_program_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else", "words": []}))
    with pytest.raises(IllegalInstruction, match="not a cdm-qta program"):
        load_program(path)


def test_engines_and_token_queues_are_the_isas() -> None:
    assert [e.label for e in Engine] == ["load", "compute", "store"]
    assert Engine.LOAD.prev is None and Engine.STORE.next is None
    assert [q.name for q in TOKEN_QUEUES] == ["l2c", "c2l", "c2s", "s2c"]
    assert [str(q) for q in TOKEN_QUEUES] == [
        "load->compute",
        "compute->load",
        "compute->store",
        "store->compute",
    ]
    l2c = token_queue(Engine.LOAD, Engine.COMPUTE)
    assert (l2c.push_flag, l2c.pop_flag) == ("push_next", "pop_prev")
    with pytest.raises(ValueError, match="no token queue between LOAD and STORE"):
        token_queue(Engine.LOAD, Engine.STORE)


def test_legal_flags_pops_and_pushes() -> None:
    assert legal_flags(Opcode.LOAD) == {"pop_next", "push_next"}
    assert legal_flags(Opcode.COMPUTE) == set(TOKEN_FLAGS)
    assert legal_flags(Opcode.STORE) == {"pop_prev", "push_prev"}
    assert legal_flags(Opcode.FENCE) == set()
    every = dict.fromkeys(TOKEN_FLAGS, True)
    assert Load(**every).illegal_flags == {"pop_prev", "push_prev"}
    assert [str(q) for q in pops(Load(**every))] == ["compute->load"]
    assert [str(q) for q in pushes(Store(**every))] == ["store->compute"]
    assert [str(q) for q in pops(Compute(**every))] == ["load->compute", "store->compute"]
    assert pops(Fence()) == () and engine_of(Fence()) is None
    assert Fence(push_next=True).illegal_flags == {"push_next"}


def test_the_dma_command_carries_the_isa_fields() -> None:
    """The DMA's command layout is built from the LOAD/STORE fields: no width typed twice."""
    from amaranth.hdl import Shape

    from cdm_qta.hw.dma import dma_command_layout

    layout = dma_command_layout()
    for name in ("dram_addr", "stride", "rows", "row_bytes"):
        assert Shape.cast(layout[name].shape).width == field_bits(Opcode.LOAD, name)
        assert field_bits(Opcode.LOAD, name) == field_bits(Opcode.STORE, name)
    assert field_max(Opcode.COMPUTE, "k") == (1 << field_bits(Opcode.COMPUTE, "k")) - 1
